"""The console in a real browser: Debian's headless Chromium driven by Playwright against a real
`tether serve` on loopback (issue 19, "Tested in a real browser"), then against three nodes on
one PostgreSQL database behind a proxy that sends each request to the next node (conftest.py):
the sign-in, the cookie, the form posts and their receipts must work whichever node answers.

A person opens a platform's sign-in link, sees their agents, revokes a session and disconnects
an agent, and reads the receipt; /v1/authorize then denies those tokens; a last session is
revoked with the keyboard only. A reused link is
refused; a name holding `<script>` renders as text; a form posted from another site is refused.
An auditor opens the revocation and sees its tree with zero survivors; an admin signs in with a
link from `tether console-link`. No page logs an error or a CSP violation.

Screenshots go to tests/browser/artifacts/ (ignored by git; the cluster's with the prefix
`three-nodes-`); with UPDATE_DOCS_SCREENSHOTS=1 the two the README shows are also written to
docs/, from the one-node run.
"""

from __future__ import annotations

import http.server
import os
import pathlib
import shutil
import subprocess
import threading

from playwright.sync_api import Page, expect, sync_playwright

from conftest import REPO, TETHER_BIN, api

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "browser" / "artifacts"
# Debian's Chromium in a container: no sandbox (no user namespaces), no GPU, nothing phoning home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EVIL_SCRIPT_NAME = '<script>alert("owned")</script> Mail helper'


def watch(page: Page, problems: list[str]) -> None:
    """Collects what must not happen: console errors (CSP violations are among them), uncaught
    exceptions and dialogs (an escaped `<script>` never opens one)."""
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))


def screenshot(page: Page, name: str, prefix: str) -> pathlib.Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{prefix}{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def to_docs(shot: pathlib.Path, name: str) -> None:
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1" and not shot.name.startswith("three-nodes-"):
        shutil.copyfile(shot, REPO / "docs" / name)


def decision(base: str, verifier: str, token: str) -> str:
    return api(base, "POST", "/v1/authorize", verifier, {"token": token, "scope": "mail:read"})["decision"]


def scene(base: str, admin: str) -> dict:
    """A person with two agents on one platform; the first has a session with a sub-agent session."""
    platform = api(base, "POST", "/v1/platforms", admin, {"name": "Acme Assistants"})
    pcred = api(base, "POST", "/v1/credentials", admin, {"role": "platform", "platform_id": platform["id"]})["credential"]
    user = api(base, "POST", "/v1/users", admin, {
        "external_id": "idp|ada", "display_name": "Ada Lovelace", "permissions": ["mail:read", "calendar:read"],
    })
    gmail = api(base, "POST", "/v1/integrations", pcred, {"name": "Gmail", "scopes": ["mail:read", "calendar:read"]})
    planner = api(base, "POST", "/v1/agents", pcred, {"name": "Trip planner", "scopes": ["mail:read", "calendar:read"]})
    evil = api(base, "POST", "/v1/agents", pcred, {"name": EVIL_SCRIPT_NAME, "scopes": ["mail:read"]})

    def delegate(agent: dict, scopes: list[str]) -> str:
        body = {"user_id": user["id"], "agent_id": agent["id"], "integration_id": gmail["id"], "scopes": scopes}
        return api(base, "POST", "/v1/delegations", pcred, body)["id"]

    def session(delegation: str, parent: str | None = None, ip: str = "203.0.113.7") -> dict:
        body = {"delegation_id": delegation, "scopes": ["mail:read"],
                "metadata": {"ip": ip, "user_agent": "trip-planner/2.1"}}
        if parent:
            body["parent_session_id"] = parent
        created = api(base, "POST", "/v1/sessions", pcred, body)
        return {"id": created["session"]["id"], "token": created["token"]}

    planner_delegation = delegate(planner, ["mail:read", "calendar:read"])
    evil_delegation = delegate(evil, ["mail:read"])
    main = session(planner_delegation)
    sub = session(planner_delegation, parent=main["id"], ip="198.51.100.4")
    other = session(planner_delegation, ip="192.0.2.10")
    third = session(planner_delegation, ip="192.0.2.11")
    third_sub = session(planner_delegation, parent=third["id"], ip="198.51.100.9")
    evil_session = session(evil_delegation)
    return {"platform": pcred, "user": user["id"], "planner": planner["id"], "evil": evil["id"],
            "main": main, "sub": sub, "other": other, "third": third, "third_sub": third_sub,
            "evil_session": evil_session}


class Attacker:
    """A page on another origin whose form posts to the console (what a CSRF attack sends)."""

    def __init__(self, target: str, host: str):
        page = (
            "<!doctype html><title>Win a prize</title><form method=post action='%s/console/agents'>"
            "<input type=hidden name=csrf value=guessed><input type=hidden name=action value=sign_out_all>"
            "<button>Claim</button></form>" % target
        ).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_the_console_in_chromium(tether):
    base, admin = tether.base, tether.admin

    def shoot(page: Page, name: str) -> pathlib.Path:
        return screenshot(page, name, tether.artifact_prefix)

    verifier = api(base, "POST", "/v1/credentials", admin, {"role": "verifier"})["credential"]
    world = scene(base, admin)
    link = api(base, "POST", "/v1/console-links", world["platform"], {"user_id": world["user"]})["url"]
    problems: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            person = browser.new_context(viewport={"width": 1280, "height": 900})
            page = person.new_page()
            watch(page, problems)

            # Sign in with the platform's link: the page lands on "Connected agents".
            page.goto(link)
            page.wait_for_url("**/console/agents")
            expect(page.get_by_role("heading", name="Connected agents")).to_be_visible()
            expect(page.get_by_text("Ada Lovelace")).to_be_visible()
            expect(page.get_by_role("heading", name="Trip planner")).to_be_visible()
            # The `<script>` in a name is text on the page, not a script.
            expect(page.get_by_role("heading", name=EVIL_SCRIPT_NAME)).to_be_visible()
            assert page.locator("script").count() == 0
            expect(page.get_by_text("sub-agent Trip planner")).to_have_count(2)
            to_docs(shoot(page, "01-connected-agents"), "console-connected-agents.png")

            # Revoke a session (and, with it, its sub-agent session), keyboard-free but confirmed.
            row = page.locator("tr", has_text=world["main"]["id"])
            row.get_by_text("Revoke…").click()
            row.get_by_role("button", name="Yes, revoke this session").click()
            receipt = page.get_by_role("status")
            expect(receipt).to_contain_text("2 sessions ended at ")
            expect(receipt).to_contain_text("the next request with their tokens is refused")
            expect(receipt).to_contain_text("revocation feed")
            shoot(page, "02-receipt-session")
            assert decision(base, verifier, world["main"]["token"]) == "deny"
            assert decision(base, verifier, world["sub"]["token"]) == "deny"
            assert decision(base, verifier, world["other"]["token"]) == "allow"

            # Disconnect the agent: its other sessions end, sub-agent session included.
            agent = page.locator("section.agent", has=page.get_by_role("heading", name="Trip planner"))
            agent.get_by_text("Disconnect this agent…").click()
            agent.get_by_role("button", name="Yes, disconnect Trip planner").click()
            expect(page.get_by_role("status")).to_contain_text("3 sessions ended at ")
            shoot(page, "03-receipt-disconnect")
            for ended in ("other", "third", "third_sub"):
                assert decision(base, verifier, world[ended]["token"]) == "deny"
            assert decision(base, verifier, world["evil_session"]["token"]) == "allow"
            assert problems == [], problems

            # A form posted from another site is refused, and changes nothing: from `localhost`
            # (another site) the browser withholds the SameSite=Strict cookie; from 127.0.0.1 on
            # another port (same site, another origin) it sends the cookie and tether refuses the
            # origin.
            for host, refusal in (("localhost", "not signed in"), ("127.0.0.1", "nothing was changed")):
                attacker = Attacker(base, host)
                try:
                    attack = person.new_page()
                    attack.goto(attacker.url)
                    with attack.expect_navigation():
                        attack.get_by_role("button", name="Claim").click()
                    expect(attack.get_by_role("alert")).to_contain_text(refusal)
                    shoot(attack, f"04-forged-post-from-{host}")
                    attack.close()
                finally:
                    attacker.close()
            assert decision(base, verifier, world["evil_session"]["token"]) == "allow"

            # The link was single use.
            again = person.new_page()
            answer = again.goto(link)
            assert answer is not None and answer.status == 410
            expect(again.get_by_role("alert")).to_contain_text("already been used")
            shoot(again, "05-link-reused")
            again.close()

            # With the keyboard only: focus the last session's "Revoke…", open it, confirm.
            row = page.locator("tr", has_text=world["evil_session"]["id"])
            row.locator("summary").focus()
            page.keyboard.press("Enter")
            page.keyboard.press("Tab")
            expect(row.get_by_role("button", name="Yes, revoke this session")).to_be_focused()
            with page.expect_navigation():
                page.keyboard.press("Enter")
            expect(page.get_by_role("status")).to_contain_text("1 session ended at ")
            assert decision(base, verifier, world["evil_session"]["token"]) == "deny"
            assert problems == [], problems

            # An auditor opens the revocation: the tree, zero survivors.
            problems.clear()
            disconnect = api(base, "GET", "/v1/audit?action=user.agent_disconnected", admin)["items"][0]["seq"]
            auditor_link = api(base, "POST", "/v1/console-links", admin, {"role": "auditor"})["url"]
            auditor = browser.new_context(viewport={"width": 1280, "height": 900})
            review = auditor.new_page()
            watch(review, problems)
            review.goto(auditor_link)
            review.wait_for_url("**/console/audit")
            expect(review.get_by_role("heading", name="Audit timeline")).to_be_visible()
            review.get_by_label("Action").fill("user.agent_disconnected")
            review.get_by_role("button", name="Filter").click()
            review.get_by_role("link", name="user.agent_disconnected").click()
            review.wait_for_url(f"**/console/revocations/{disconnect}")
            expect(review.locator("svg .node.trigger")).to_have_count(1)
            expect(review.locator("svg .node.revoked")).to_have_count(3)
            expect(review.locator("svg .node.survivor")).to_have_count(0)
            expect(review.get_by_role("status")).to_contain_text("0 survivors")
            to_docs(shoot(review, "06-revocation-tree"), "console-revocation-tree.png")
            review.get_by_role("button", name="Sign out").click()
            expect(review.get_by_role("heading", name="Signed out")).to_be_visible()

            # An admin signs in with a link printed by the CLI.
            cli = subprocess.run(
                [str(TETHER_BIN), "console-link", "--role", "admin", *tether.cli_args, "--public-url", base],
                capture_output=True, text=True, timeout=60, check=True,
            )
            admin_page = browser.new_context().new_page()
            watch(admin_page, problems)
            admin_page.goto(cli.stdout.strip())
            admin_page.wait_for_url("**/console/admin")
            expect(admin_page.get_by_role("heading", name="Overview")).to_be_visible()
            expect(admin_page.get_by_role("rowheader", name="Acme Assistants")).to_be_visible()
            shoot(admin_page, "07-admin-overview")
            assert problems == [], problems
        finally:
            browser.close()
