//! `tether demo`: the whole story against the real router on a throw-away data directory.

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use tether::domain::Error;
use tether::{App, Config};

struct Demo {
    router: axum::Router,
}

impl Demo {
    async fn call(&self, method: Method, path: &str, credential: &str, body: Option<Value>) -> Result<Value, Error> {
        let mut request =
            Request::builder().method(method).uri(path).header("authorization", format!("Bearer {credential}"));
        let body = match body {
            Some(v) => {
                request = request.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let response =
            self.router.clone().oneshot(request.body(body).map_err(Error::internal)?).await.map_err(Error::internal)?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(Error::internal)?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).map_err(Error::internal)?;
        if !status.is_success() {
            return Err(Error::internal(format!("{path} answered {status}: {value}")));
        }
        Ok(value)
    }
}

fn step(n: u32, text: &str) {
    println!("\n{n}. {text}");
}

fn show(label: &str, value: &Value) {
    println!("   {label}: {value}");
}

pub async fn run() -> Result<(), Error> {
    let dir = tempfile_dir()?;
    let app = App::open(&Config::new(&dir)).await?;
    let admin = app.first_admin_credential.clone().ok_or_else(|| Error::internal("no admin credential"))?;
    let demo = Demo { router: app.router() };
    println!("tether demo — a throw-away instance in {}", dir.display());

    step(1, "An admin registers a user, Ada, who may read and send mail.");
    let user = demo
        .call(
            Method::POST,
            "/v1/users",
            &admin,
            Some(json!({"external_id": "idp|ada", "display_name": "Ada", "permissions": ["mail:read", "mail:send"]})),
        )
        .await?;
    show("user", &user["id"]);

    step(2, "A platform registers an agent and a mail integration.");
    let platform = demo.call(Method::POST, "/v1/platforms", &admin, Some(json!({"name": "Acme Agents"}))).await?;
    let cred = demo
        .call(Method::POST, "/v1/credentials", &admin, Some(json!({"role": "platform", "platform_id": platform["id"]})))
        .await?;
    let platform_cred = cred["credential"].as_str().unwrap_or_default().to_owned();
    let agent = demo
        .call(
            Method::POST,
            "/v1/agents",
            &platform_cred,
            Some(json!({"name": "inbox-assistant", "scopes": ["mail:read", "mail:send"]})),
        )
        .await?;
    let integration = demo
        .call(
            Method::POST,
            "/v1/integrations",
            &platform_cred,
            Some(json!({"name": "mail", "scopes": ["mail:read", "mail:send", "mail:delete"]})),
        )
        .await?;
    show("agent", &agent["id"]);
    show("integration", &integration["id"]);

    step(3, "Ada consents: the agent may read her mail through the integration.");
    let delegation = demo.call(Method::POST, "/v1/delegations", &platform_cred, Some(json!({"user_id": user["id"], "agent_id": agent["id"], "integration_id": integration["id"], "scopes": ["mail:read"]}))).await?;
    show("delegation", &delegation["id"]);

    step(4, "The platform opens a session and receives its token.");
    let session = demo
        .call(
            Method::POST,
            "/v1/sessions",
            &platform_cred,
            Some(json!({"delegation_id": delegation["id"], "scopes": ["mail:read"], "ttl_seconds": 900})),
        )
        .await?;
    let token = session["token"].as_str().unwrap_or_default().to_owned();
    show("session", &session["session"]["id"]);
    println!("   token: {}… ({} characters)", &token[..24.min(token.len())], token.len());

    let verifier = demo.call(Method::POST, "/v1/credentials", &admin, Some(json!({"role": "verifier"}))).await?;
    let verifier = verifier["credential"].as_str().unwrap_or_default().to_owned();
    step(5, "The mail service asks: may this token read mail? And send it?");
    let allow = demo
        .call(Method::POST, "/v1/authorize", &verifier, Some(json!({"token": token, "scope": "mail:read"})))
        .await?;
    show("mail:read", &json!({"decision": allow["decision"], "reason": allow["reason"]}));
    let send = demo
        .call(Method::POST, "/v1/authorize", &verifier, Some(json!({"token": token, "scope": "mail:send"})))
        .await?;
    show("mail:send", &json!({"decision": send["decision"], "reason": send["reason"]}));

    step(6, "Ada's account is disabled by the IAM team.");
    let receipt = demo
        .call(
            Method::POST,
            &format!("/v1/users/{}/disable", user["id"].as_str().unwrap_or_default()),
            &admin,
            Some(json!({"reason": "offboarded"})),
        )
        .await?;
    show("receipt cause", &receipt["cause"]);
    show("sessions revoked", &json!(receipt["revoked"].as_array().map(Vec::len)));

    step(7, "The very next check with the same token:");
    let deny = demo
        .call(Method::POST, "/v1/authorize", &verifier, Some(json!({"token": token, "scope": "mail:read"})))
        .await?;
    show("mail:read", &json!({"decision": deny["decision"], "reason": deny["reason"]}));

    step(8, "An auditor verifies the hash-chained audit log.");
    let verify = demo.call(Method::GET, "/v1/audit/verify", &admin, None).await?;
    show("verify", &verify);
    let coverage =
        demo.call(Method::GET, &format!("/v1/audit/coverage?event={}", receipt["cause"]["seq"]), &admin, None).await?;
    show("coverage survivors", &coverage["survivors"]);

    let ok = allow["decision"] == "allow" && deny["decision"] == "deny" && verify["ok"] == true;
    drop(demo);
    drop(app);
    let _ = std::fs::remove_dir_all(&dir);
    if ok {
        println!("\nDone: access ended the moment the trust behind it did, and the log proves it.");
        Ok(())
    } else {
        Err(Error::internal("the demo did not go as expected"))
    }
}

fn tempfile_dir() -> Result<std::path::PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!("tether-demo-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).map_err(Error::internal)?;
    Ok(dir)
}
