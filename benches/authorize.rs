//! The authorize hot path in process, 1-block agent tokens (issue 6, item 1).
//!
//! - `cached`: the same token and request again and again (verified-token cache hit, live-view
//!   lookup, policy outcome remembered for the second);
//! - `cached_new_resource`: a cached token with a new resource on every call (the shipped policy
//!   does not read it, so the remembered outcome applies); `cached_policy_run`: the same under a
//!   policy that reads `resource`, so the policy runs on every call;
//! - `first_seen`: a token never seen before each call (parse + verify + claims + live view +
//!   policy + cache insert). The tokens are minted beforehand, untimed, on the app's key ring for
//!   real, active sessions (exactly what a refresh would hand out);
//! - `bare_biscuit`: biscuit-auth alone on the same kind of fresh tokens: `Biscuit::from_base64`
//!   with the public key, the same policy text parsed once and cloned, the same request facts and
//!   run limits, `authorize()`. first_seen / bare is the ratio the target is about;
//! - `verify_only` and `bare_parse_verify`: the first step of each alone, to see where time goes.
//!
//! `cargo bench --bench authorize` (add `-- --quick` style filters as with any criterion bench).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use biscuit_auth::builder::{Fact, Term};
use biscuit_auth::{Algorithm, AuthorizerBuilder, Biscuit, PublicKey};
use criterion::{black_box, Criterion};

use tether::authorize::{Reason, Request};
use tether::domain::Scope;
use tether::tokens::{self, AgentClaims};
use tether::Services;

/// Fresh tokens, minted (untimed) as the benchmark consumes them.
struct TokenPool {
    services: Arc<Services>,
    claims: Vec<AgentClaims>,
    next: usize,
}

impl TokenPool {
    fn take(&mut self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                self.next += 1;
                support::remint(&self.services, &self.claims[self.next % self.claims.len()])
            })
            .collect()
    }
}

fn request_facts(builder: AuthorizerBuilder, scope: &str, now_s: u64, age: i64) -> AuthorizerBuilder {
    builder
        .fact(Fact::new("requested_scope".to_owned(), vec![Term::Str(scope.to_owned())]))
        .and_then(|b| b.fact(Fact::new("time".to_owned(), vec![Term::Date(now_s)])))
        .and_then(|b| b.fact(Fact::new("token_age".to_owned(), vec![Term::Integer(age)])))
        .expect("request facts")
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// `authorizer` asked about the same token and scope with a different resource on every call.
fn bench_new_resource_each_call(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    authorizer: &tether::authorize::Authorizer,
    token: &str,
    scope: &Scope,
    resources: &[String],
) {
    let mut i = 0usize;
    group.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 1) % resources.len();
            let d = authorizer.authorize(&Request { token: black_box(token), scope, resource: Some(&resources[i]) });
            debug_assert!(d.allowed());
            black_box(d.reason)
        })
    });
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = support::data_dir();
    let (app, tokens) = runtime.block_on(async {
        let app = support::open(dir.path()).await;
        let chain = support::chain(&app.services).await;
        let user = support::delegated_user(&app.services, chain).await;
        let sessions = support::sessions(&app.services, user.delegation, 16, 16).await;
        (app, sessions.into_iter().map(|(_, t)| t).collect::<Vec<_>>())
    });
    let services = app.services.clone();
    let authorizer = &services.api.authorizer;
    let scope = Scope::parse("mail:read").expect("scope");
    let claims: Vec<AgentClaims> =
        tokens.iter().map(|t| authorizer.verified(t).expect("verifies").claims.clone()).collect();
    authorizer.clear_cache();
    let token_chars = tokens[0].len();
    eprintln!("machine: {}; token: {token_chars} base64 chars, 1 block", support::machine());

    // The bare loop's inputs: the agent public key and the same policy text, parsed once.
    let public = services.env.agent_keys.public_keys();
    let root = PublicKey::from_bytes_hex(&public[0].public_key, Algorithm::Ed25519).expect("public key");
    let policy = AuthorizerBuilder::new()
        .code(tokens::policy::DEFAULT_AGENT_POLICY)
        .expect("policy parses")
        .set_limits(tokens::run_limits());

    let mut pool = TokenPool { services: services.clone(), claims: claims.clone(), next: 0 };
    // Memory per cached token, first, on a fresh heap: present fresh tokens (minted before the
    // measurement) to the empty cache and compare resident memory before and after, over the
    // tokens the cache then holds. 20,000 by default (TETHER_BENCH_CACHE_FILL), a number that
    // does not depend on the cache's own bound: a cache that holds fewer keeps its bound (and
    // the memory of the evicted entries is reused), one that holds more keeps them all.
    let fill_count = std::env::var("TETHER_BENCH_CACHE_FILL").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000usize);
    let fill = pool.take(fill_count);
    let before = support::rss_bytes();
    for t in &fill {
        black_box(authorizer.authorize(&Request { token: t, scope: &scope, resource: None }).reason);
    }
    let after = support::rss_bytes();
    let cached = authorizer.cached_tokens();
    eprintln!(
        "token cache memory: {fill_count} fresh tokens presented, {cached} cached, {:.1} MiB resident added = {} bytes per cached token",
        after.saturating_sub(before) as f64 / 1048576.0,
        after.saturating_sub(before) / cached.max(1) as u64
    );
    authorizer.clear_cache();

    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut group = criterion.benchmark_group("authorize_1_block");

    let token = tokens[0].clone();
    assert_eq!(authorizer.authorize(&Request { token: &token, scope: &scope, resource: None }).reason, Reason::Allowed);
    group.bench_function("cached", |b| {
        b.iter(|| {
            let d = authorizer.authorize(&Request { token: black_box(&token), scope: &scope, resource: None });
            debug_assert!(d.allowed());
            black_box(d.reason)
        })
    });

    // A new resource on every call. The shipped policy never reads `resource`, so the outcome
    // remembered for this second still applies.
    let resources: Vec<String> = (0..4096).map(|i| format!("mailbox/{i}")).collect();
    bench_new_resource_each_call(&mut group, "cached_new_resource", authorizer, &token, &scope, &resources);

    // The same with a policy that reads `resource` (the shipped one plus a rule naming it), so
    // every call runs the policy: the cost of a cached token's policy run.
    let reading = tokens::Policy::parse(
        &format!("{}\nresource_seen($r) <- resource($r);\n", tokens::policy::DEFAULT_AGENT_POLICY),
        "bench",
    )
    .expect("policy parses");
    let policy_runner = tether::authorize::Authorizer::new(
        services.env.agent_keys.clone(),
        reading,
        services.views.clone(),
        services.clock.clone(),
        tether::authorize::DEFAULT_TOKEN_CACHE_BYTES,
    );
    bench_new_resource_each_call(&mut group, "cached_policy_run", &policy_runner, &token, &scope, &resources);

    let mut first_seen_allowed = true;
    group.bench_function("first_seen", |b| {
        b.iter_custom(|iters| {
            let fresh = pool.take(iters as usize);
            let start = Instant::now();
            for t in &fresh {
                let d = authorizer.authorize(&Request { token: t, scope: &scope, resource: None });
                first_seen_allowed &= d.allowed();
                black_box(d.reason);
            }
            start.elapsed()
        })
    });
    assert!(first_seen_allowed, "a first-seen token was denied");

    let mut bare_allowed = true;
    group.bench_function("bare_biscuit", |b| {
        b.iter_custom(|iters| {
            let fresh = pool.take(iters as usize);
            let start = Instant::now();
            for t in &fresh {
                let biscuit = Biscuit::from_base64(t, root).expect("verifies");
                let now = now_seconds();
                let mut a = request_facts(policy.clone(), "mail:read", now, 0).build(&biscuit).expect("authorizer");
                bare_allowed &= a.authorize().is_ok();
            }
            start.elapsed()
        })
    });
    assert!(bare_allowed, "the bare loop denied a valid token");

    group.bench_function("verify_only", |b| {
        b.iter_custom(|iters| {
            let fresh = pool.take(iters as usize);
            let start = Instant::now();
            for t in &fresh {
                black_box(tokens::agent::verify(&services.env.agent_keys, t).is_ok());
            }
            start.elapsed()
        })
    });

    group.bench_function("bare_parse_verify", |b| {
        b.iter_custom(|iters| {
            let fresh = pool.take(iters as usize);
            let start = Instant::now();
            for t in &fresh {
                black_box(Biscuit::from_base64(t, root).is_ok());
            }
            start.elapsed()
        })
    });
    group.finish();
    criterion.final_summary();
    eprintln!("verified-token cache holds {} tokens", authorizer.cached_tokens());

    drop(app);
}
