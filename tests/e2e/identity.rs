//! The identity service end to end: customer tokens verified by the key their `kid` names
//! (RS256 and ES256 public keys from PEM files and a JWKS file, rotation, `iss`/`aud`/`nbf`,
//! algorithm confusion), frozen and unknown customers, admin roles and region scopes, the
//! customer import, and the admin audit.

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lifecircle::config::{TokenKeyConfig, UnknownCustomers};
use lifecircle::identity::admins::Role;
use lifecircle_tests::{Bundle, Reply, TestHost, on_each_backend};
use reqwest::Method;
use serde_json::{Value, json};

const HELLO: Bundle = Bundle::new("reference/hello");

fn key_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/keys")
        .join(name)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A token signed with fixture key `key` (`rs-1`, `rs-2`, `es-1`) under header `kid`.
fn signed(key: &str, algorithm: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let pem = std::fs::read(key_file(&format!("{key}.key.pem"))).expect("fixture key");
    let encoding = match algorithm {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .expect("fixture key parses");
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding).expect("signs")
}

fn claims(customer: &str) -> Value {
    json!({
        "sub": customer,
        "region": "cn-fj",
        "iss": "mobile-banking",
        "aud": "lifecircle",
        "exp": now() + 600,
    })
}

async fn echo(host: &TestHost, token: &str) -> Reply {
    host.call(token, "hello", "echo", json!({})).await
}

/// A host that trusts mobile banking's public keys only.
async fn public_key_host() -> TestHost {
    TestHost::start_with(&[HELLO], |config| {
        config.auth.token_keys = vec![TokenKeyConfig {
            kid: "rs-1".into(),
            algorithm: "RS256".into(),
            pem_file: key_file("rs-1.pub.pem"),
        }];
        config.auth.token_jwks_file = Some(key_file("jwks.json"));
        config.auth.token_issuer = Some("mobile-banking".into());
        config.auth.token_audience = Some("lifecircle".into());
        config.auth.token_leeway_seconds = 5;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_verify_with_the_key_their_kid_names_rs256_es256_and_rotated_keys() {
    let host = public_key_host().await;
    assert!(
        !host.state.identity.can_mint(),
        "public keys only: no HS256 secret"
    );
    let rs1 = signed("rs-1", Algorithm::RS256, Some("rs-1"), &claims("alice"));
    let rs2 = signed("rs-2", Algorithm::RS256, Some("rs-2"), &claims("alice"));
    let es1 = signed("es-1", Algorithm::ES256, Some("es-1"), &claims("bob"));
    for token in [&rs1, &rs2, &es1] {
        let reply = echo(&host, token).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_confused_expired_early_and_misaddressed_tokens_are_401() {
    let host = public_key_host().await;
    let b64 = |value: &Value| {
        use std::fmt::Write as _;
        let bytes = value.to_string().into_bytes();
        // base64url without padding, by hand: the tests crate has no base64 dependency.
        const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                let _ = write!(out, "{}", TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    };
    let public_pem = std::fs::read(key_file("rs-1.pub.pem")).expect("pem");
    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    // Signed with rs-1's private key but naming rs-2.
    cases.push((
        "forged",
        signed("rs-1", Algorithm::RS256, Some("rs-2"), &claims("eve")),
        "token_invalid",
    ));
    // alg none naming a real key.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "rs-1"})),
        b64(&claims("eve"))
    );
    cases.push(("alg none", none, "token_invalid"));
    // HS256 "signed" with the RSA public key as the secret: the key decides the algorithm.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rs-1".into());
    let confused = jsonwebtoken::encode(
        &header,
        &claims("eve"),
        &EncodingKey::from_secret(&public_pem),
    )
    .expect("signs");
    cases.push(("HS256 with the public key", confused, "token_invalid"));
    cases.push((
        "unknown kid",
        signed("rs-1", Algorithm::RS256, Some("rs-9"), &claims("eve")),
        "token_invalid",
    ));
    let mut expired = claims("eve");
    expired["exp"] = json!(now() - 60);
    cases.push((
        "expired",
        signed("rs-1", Algorithm::RS256, Some("rs-1"), &expired),
        "token_expired",
    ));
    let mut early = claims("eve");
    early["nbf"] = json!(now() + 300);
    cases.push((
        "not yet valid",
        signed("rs-1", Algorithm::RS256, Some("rs-1"), &early),
        "token_invalid",
    ));
    let mut issuer = claims("eve");
    issuer["iss"] = json!("someone-else");
    cases.push((
        "wrong issuer",
        signed("rs-1", Algorithm::RS256, Some("rs-1"), &issuer),
        "token_invalid",
    ));
    let mut audience = claims("eve");
    audience["aud"] = json!("another-app");
    cases.push((
        "wrong audience",
        signed("rs-1", Algorithm::RS256, Some("rs-1"), &audience),
        "token_invalid",
    ));
    let mut no_audience = claims("eve");
    no_audience.as_object_mut().expect("object").remove("aud");
    cases.push((
        "no audience",
        signed("rs-1", Algorithm::RS256, Some("rs-1"), &no_audience),
        "token_invalid",
    ));
    for (case, token, code) in cases {
        let reply = echo(&host, &token).await;
        assert_eq!(
            (reply.status, reply.code()),
            (401, code),
            "{case}: {reply:?}"
        );
    }
    host.stop().await;
}

async fn admin(
    host: &TestHost,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Reply {
    static KEYS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let key = format!(
        "k-{}",
        KEYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let body = body.map(|body| body.to_string().into_bytes());
    host.request_with_headers(
        method,
        path,
        Some(token),
        body,
        &[("Idempotency-Key", &key)],
    )
    .await
}

async fn import(host: &TestHost, token: &str, format: &str, text: &str) -> Reply {
    host.request(
        Method::POST,
        &format!("/admin/v1/customers:import?format={format}"),
        Some(token),
        Some(text.as_bytes().to_vec()),
    )
    .await
}

on_each_backend! {
    async fn a_frozen_customer_gets_403_until_unfrozen() {
        let host = TestHost::start(&[HELLO]).await;
        let token = host.token("6222000011110000", "cn-fj");
        assert_eq!(echo(&host, &token).await.status, 200, "enrolled on first use");
        let head = host.state.admin_token.clone();
        let path = "/admin/v1/customers/6222000011110000";
        let frozen = admin(&host, Method::PATCH, path, &head, Some(json!({"status": "frozen"}))).await;
        assert_eq!(frozen.status, 200, "{frozen:?}");
        let refused = echo(&host, &token).await;
        assert_eq!((refused.status, refused.code()), (403, "customer_frozen"), "{refused:?}");
        admin(&host, Method::PATCH, path, &head, Some(json!({"status": "active"}))).await;
        assert_eq!(echo(&host, &token).await.status, 200);
        host.stop().await;
    }

    async fn a_freeze_made_on_one_replica_reaches_another_within_the_cache_time() {
        let first = TestHost::start_with(&[HELLO], |config| config.identity.customer_cache_ms = 300).await;
        let second = first.start_replica().await;
        let token = first.token("6222000011110001", "cn-fj");
        assert_eq!(echo(&first, &token).await.status, 200, "enrolled on first use");
        assert_eq!(echo(&second, &token).await.status, 200, "cached on the second replica");
        let head = first.state.admin_token.clone();
        let path = "/admin/v1/customers/6222000011110001";
        let frozen = admin(&first, Method::PATCH, path, &head, Some(json!({"status": "frozen"}))).await;
        assert_eq!(frozen.status, 200, "{frozen:?}");
        // The second replica is asked without pause: every answer from its cache must not
        // keep the cached profile alive past its time.
        let started = std::time::Instant::now();
        let refused = loop {
            let reply = echo(&second, &token).await;
            if reply.status != 200 || started.elapsed() > std::time::Duration::from_secs(5) {
                break reply;
            }
        };
        assert_eq!((refused.status, refused.code()), (403, "customer_frozen"), "{refused:?}");
        second.stop().await;
        first.stop().await;
    }

    async fn with_reject_only_imported_customers_may_enter() {
        let host = TestHost::start_with(&[HELLO], |config| {
            config.identity.unknown_customers = UnknownCustomers::Reject;
        })
        .await;
        let token = host.token("6222000011112222", "cn-fj");
        let refused = echo(&host, &token).await;
        assert_eq!((refused.status, refused.code()), (403, "customer_not_enrolled"), "{refused:?}");
        let head = host.state.admin_token.clone();
        let line = r#"{"customer_number": "6222000011112222", "region": "cn-fj"}"#;
        assert_eq!(import(&host, &head, "jsonl", line).await.status, 200);
        assert_eq!(echo(&host, &token).await.status, 200);
        host.stop().await;
    }

    async fn an_import_reports_exactly_the_bad_lines_lands_the_good_ones_and_is_idempotent() {
        let host = TestHost::start(&[HELLO]).await;
        let head = host.state.admin_token.clone();
        let file = [
            r#"{"customer_number": "c1", "region": "cn-fj", "tier": "gold", "tags": ["vip", "high churn risk"]}"#,
            r#"{"customer_number": "c2", "region": "CN-FJ"}"#,
            "",
            r#"{"customer_number": "c3", "region": "cn-gd", "status": "frozen"}"#,
            r#"not json"#,
            r#"{"region": "cn"}"#,
            r#"{"customer_number": "c4", "region": "cn", "nickname": "x"}"#,
            r#"{"customer_number": "c5", "region": "cn", "tags": "vip"}"#,
        ]
        .join("\n");
        let first = import(&host, &head, "jsonl", &file).await;
        assert_eq!(first.status, 200, "{first:?}");
        let errors: Vec<(u64, &str)> = first.body["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| (e["line"].as_u64().expect("line"), e["field"].as_str().expect("field")))
            .collect();
        assert_eq!(
            errors,
            [(2, "region"), (5, ""), (6, "customer_number"), (7, ""), (8, "tags")],
            "{first:?}"
        );
        assert_eq!(
            (&first.body["inserted"], &first.body["updated"], &first.body["rejected"]),
            (&json!(2), &json!(0), &json!(5))
        );
        let again = import(&host, &head, "jsonl", &file).await;
        assert_eq!(
            (&again.body["inserted"], &again.body["updated"], &again.body["unchanged"]),
            (&json!(0), &json!(0), &json!(2)),
            "{again:?}"
        );
        let c1 = admin(&host, Method::GET, "/admin/v1/customers/c1", &head, None).await;
        assert_eq!(c1.body["tier"], "gold", "{c1:?}");
        assert_eq!(c1.body["tags"], json!(["high churn risk", "vip"]));
        assert_eq!(c1.body["tag_history"].as_array().map(Vec::len), Some(1));
        // CSV, quoted fields, and a change of tags recorded in the history.
        let csv = "customer_number,region,tags,tier\nc1,cn-fj,\"vip|potential VIP\",gold\nc6,cn-fj,,\n";
        let third = import(&host, &head, "csv", csv).await;
        assert_eq!((&third.body["inserted"], &third.body["updated"]), (&json!(1), &json!(1)), "{third:?}");
        let c1 = admin(&host, Method::GET, "/admin/v1/customers/c1", &head, None).await;
        assert_eq!(c1.body["tags"], json!(["potential VIP", "vip"]));
        assert_eq!(c1.body["tag_history"][0]["added"], json!(["potential VIP"]));
        assert_eq!(c1.body["tag_history"][0]["removed"], json!(["high churn risk"]));
        let header = import(&host, &head, "csv", "customer_number,nickname\n1,x\n").await;
        assert_eq!((header.status, header.code()), (400, "import_invalid"), "{header:?}");
        host.stop().await;
    }

    async fn admins_act_only_within_their_role_and_region() {
        let host = TestHost::start(&[HELLO]).await;
        let branch = host.admin_token("fj-ops", Role::BranchAdmin, Some("cn-fj")).await;
        let viewer = host.admin_token("auditor", Role::Viewer, None).await;
        let fund = |region: &str| format!("/admin/v1/budgets/hello/{region}");
        let points = Some(json!({"points": 100}));
        let own = admin(&host, Method::POST, &fund("cn-fj-xm"), &branch, points.clone()).await;
        assert_eq!(own.status, 200, "{own:?}");
        let other = admin(&host, Method::POST, &fund("cn-gd"), &branch, points.clone()).await;
        assert_eq!((other.status, other.code()), (403, "admin_forbidden"), "{other:?}");
        let read = admin(&host, Method::GET, &fund("cn-fj-xm"), &viewer, None).await;
        assert_eq!(read.status, 200, "{read:?}");
        let write = admin(&host, Method::POST, &fund("cn-fj-xm"), &viewer, points.clone()).await;
        assert_eq!((write.status, write.code()), (403, "admin_forbidden"), "{write:?}");
        let nobody = admin(&host, Method::GET, &fund("cn-fj"), "lca_not-a-token", None).await;
        assert_eq!((nobody.status, nobody.code()), (401, "admin_token_invalid"));
        // A branch admin's import lands only its own region's customers.
        let lines = "{\"customer_number\": \"b1\", \"region\": \"cn-fj-xm\"}\n\
                     {\"customer_number\": \"b2\", \"region\": \"cn-gd\"}";
        let imported = import(&host, &branch, "jsonl", lines).await;
        assert_eq!(imported.body["inserted"], 1, "{imported:?}");
        assert_eq!(imported.body["errors"][0]["field"], "region");
        let gd = admin(&host, Method::GET, "/admin/v1/customers/b1", &branch, None).await;
        assert_eq!(gd.status, 200);
        let moved = admin(&host, Method::PATCH, "/admin/v1/customers/b1", &branch, Some(json!({"region": "cn-gd"}))).await;
        assert_eq!((moved.status, moved.code()), (403, "admin_forbidden"), "{moved:?}");
        // Another region's customer is as absent to a branch as one never imported.
        let head = host.state.admin_token.clone();
        let elsewhere = import(&host, &head, "jsonl", "{\"customer_number\": \"g1\", \"region\": \"cn-gd\"}").await;
        assert_eq!(elsewhere.body["inserted"], 1, "{elsewhere:?}");
        for number in ["g1", "never-imported"] {
            let path = format!("/admin/v1/customers/{number}");
            let read = admin(&host, Method::GET, &path, &branch, None).await;
            let changed = admin(&host, Method::PATCH, &path, &branch, Some(json!({"tier": "gold"}))).await;
            for reply in [read, changed] {
                assert_eq!((reply.status, reply.code()), (404, "customer_not_found"), "{number}: {reply:?}");
                assert_eq!(reply.body["message"], "no customer with this customer number; import them first");
            }
        }
        let taken = import(&host, &branch, "jsonl", "{\"customer_number\": \"g1\", \"region\": \"cn-fj\"}").await;
        assert!(!taken.body["errors"][0]["reason"].as_str().unwrap_or("cn-gd").contains("cn-gd"), "{taken:?}");
        host.stop().await;
    }

    async fn every_admin_change_is_in_the_audit_with_who_before_and_after() {
        let host = TestHost::start(&[HELLO]).await;
        let head = host.state.admin_token.clone();
        let branch = host.admin_token("fj-ops", Role::BranchAdmin, Some("cn-fj")).await;
        admin(&host, Method::POST, "/admin/v1/budgets/hello/cn-fj", &branch, Some(json!({"points": 50}))).await;
        admin(&host, Method::POST, "/admin/v1/budgets/hello/cn-gd", &head, Some(json!({"points": 70}))).await;
        import(&host, &head, "jsonl", r#"{"customer_number": "a1", "region": "cn-gd"}"#).await;
        admin(&host, Method::PATCH, "/admin/v1/customers/a1", &head, Some(json!({"tier": "silver"}))).await;
        let page = admin(&host, Method::GET, "/admin/v1/audit?limit=2", &head, None).await;
        assert_eq!(page.status, 200, "{page:?}");
        let entries = page.body["entries"].as_array().expect("entries");
        assert_eq!(entries[0]["action"], "customer.update");
        assert_eq!(entries[0]["actor"], "config");
        assert_eq!(entries[0]["before"]["tier"], "");
        assert_eq!(entries[0]["after"]["tier"], "silver");
        assert_eq!(entries[1]["action"], "customers.import");
        let cursor = page.body["next_cursor"].as_str().expect("a next page");
        let older = admin(&host, Method::GET, &format!("/admin/v1/audit?cursor={cursor}"), &head, None).await;
        let actions: Vec<&str> = older.body["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["action"].as_str().unwrap_or_default())
            .collect();
        // Oldest last: development mode enabling the bundle in `cn` at start-up is a change too.
        assert_eq!(actions, ["budget.fund", "budget.fund", "enablement.put"]);
        assert_eq!(older.body["entries"][1]["actor"], "fj-ops");
        assert_eq!(older.body["entries"][1]["after"]["remaining"], 50);
        // The branch admin sees its own subtree only.
        let scoped = admin(&host, Method::GET, "/admin/v1/audit", &branch, None).await;
        let regions: Vec<&str> = scoped.body["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["region"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(regions, ["cn-fj"], "{scoped:?}");
        host.stop().await;
    }
}

const POINTS_DEMO: Bundle = Bundle::new("reference/points-demo");

async fn put_partner(host: &TestHost, token: &str, id: &str, plugins: Value) -> Reply {
    let body = json!({"name": format!("{id} system"), "plugins": plugins});
    admin(
        host,
        Method::PUT,
        &format!("/admin/v1/partners/{id}"),
        token,
        Some(body),
    )
    .await
}

async fn partner_key(host: &TestHost, token: &str, id: &str) -> Reply {
    let path = format!("/admin/v1/partners/{id}/keys");
    admin(
        host,
        Method::POST,
        &path,
        token,
        Some(json!({"name": "main"})),
    )
    .await
}

async fn partner_call(host: &TestHost, key: &str, path: &str) -> Reply {
    host.request(
        Method::POST,
        path,
        Some(key),
        Some(br#"{"till": 7}"#.to_vec()),
    )
    .await
}

on_each_backend! {
    async fn partners_reach_only_their_own_plugins_and_arrive_as_partners() {
        let host = TestHost::start(&[HELLO, POINTS_DEMO]).await;
        let head = host.state.admin_token.clone();
        assert_eq!(put_partner(&host, &head, "till-x", json!(["hello"])).await.status, 200);
        assert_eq!(put_partner(&host, &head, "biller-y", json!(["points-demo"])).await.status, 200);
        let x = partner_key(&host, &head, "till-x").await;
        assert_eq!(x.status, 200, "{x:?}");
        let x = x.body["key"].as_str().expect("a key").to_owned();
        let y = partner_key(&host, &head, "biller-y").await;
        let y = y.body["key"].as_str().expect("a key").to_owned();
        let again = partner_key(&host, &head, "till-x").await;
        assert_eq!(again.status, 400, "one key per name: {again:?}");

        // A region outside the bank's tree is refused: its data would be kept apart.
        let invented = partner_call(&host, &x, "/partner/v1/scenarios/hello/echo?region=cn-fj").await;
        assert_eq!((invented.status, invented.code()), (404, "region_not_found"), "{invented:?}");
        let created = admin(&host, Method::PUT, "/admin/v1/regions/cn-fj", &head, Some(json!({"display_name": "Fujian"}))).await;
        assert_eq!(created.status, 200, "{created:?}");
        let echo = "/partner/v1/scenarios/hello/echo?region=cn-fj";
        let echoed = partner_call(&host, &x, echo).await;
        assert_eq!((echoed.status, &echoed.body), (200, &json!({"echo": {"till": 7}})), "{echoed:?}");
        // The plugin sees a partner, not a customer: `count` is for customers only.
        let count = partner_call(&host, &x, "/partner/v1/scenarios/hello/count?region=cn-fj").await;
        assert_ne!(count.status, 200, "{count:?}");
        assert_eq!(count.body["scenario_code"], "customer_required", "{count:?}");
        let profile = partner_call(&host, &x, "/partner/v1/scenarios/hello/profile?region=cn-fj").await;
        assert_eq!((profile.status, &profile.body), (200, &Value::Null), "no customer profile for a partner");
        let other = partner_call(&host, &y, echo).await;
        assert_eq!((other.status, other.code()), (403, "partner_forbidden"), "{other:?}");
        let forged = partner_call(&host, "lcp_forged", echo).await;
        assert_eq!((forged.status, forged.code()), (401, "partner_key_invalid"));
        let nowhere = partner_call(&host, &x, "/partner/v1/scenarios/hello/echo").await;
        assert_eq!((nowhere.status, nowhere.code()), (400, "request_invalid"));
        // Partners are head office's to manage.
        let branch = host.admin_token("fj-ops", Role::BranchAdmin, Some("cn-fj")).await;
        let refused = put_partner(&host, &branch, "till-z", json!([])).await;
        assert_eq!((refused.status, refused.code()), (403, "admin_forbidden"));
        host.stop().await;
    }
}

on_each_backend! {
    async fn a_plugin_sees_only_the_profile_fields_requested_and_granted() {
        // hello requests tier and tags; the bank grants tier and region.
        let host = TestHost::start_with(&[HELLO], |config| {
            config.plugin_grants.insert(
                "hello".into(),
                lifecircle::config::PluginGrants {
                    identity_fields: vec!["tier".into(), "region".into()],
                },
            );
        })
        .await;
        let head = host.state.admin_token.clone();
        let line = r#"{"customer_number": "c1", "region": "cn-fj", "tier": "gold", "tags": ["vip"]}"#;
        assert_eq!(import(&host, &head, "jsonl", line).await.status, 200);
        let token = host.token("c1", "cn-fj");
        let seen = host.call(&token, "hello", "profile", json!(null)).await;
        assert_eq!(seen.status, 200, "{seen:?}");
        assert_eq!(seen.body, json!({"region": null, "tier": "gold", "tags": null}));
        assert!(!seen.body.to_string().contains("c1"), "never the customer number");
        host.stop().await;

        // Nothing granted: nothing seen.
        let host = TestHost::start(&[HELLO]).await;
        let token = host.token("c1", "cn-fj");
        let seen = host.call(&token, "hello", "profile", json!(null)).await;
        assert_eq!(seen.body, json!({"region": null, "tier": null, "tags": null}), "{seen:?}");
        host.stop().await;
    }
}

on_each_backend! {
    async fn pseudonyms_are_stable_per_plugin_and_differ_across_plugins() {
        let host = TestHost::start(&[HELLO, POINTS_DEMO]).await;
        let token = host.token("6222000011113333", "cn-fj");
        let greet = || host.call(&token, "hello", "greet", json!(null));
        let first = greet().await.body["message"].as_str().expect("a greeting").to_owned();
        let second = greet().await.body["message"].as_str().expect("a greeting").to_owned();
        assert_eq!(first, second, "stable for one plugin");
        assert!(!first.contains("6222000011113333"), "{first}");
        assert_eq!(host.call(&token, "points-demo", "balance", json!(null)).await.status, 200);
        // Every invocation record keeps the pseudonym the plugin saw.
        host.state.committer.flush().await.expect("records written");
        let mut connection = host.state.db.read.acquire().await.expect("connection");
        let seen: Vec<(String, String)> = lifecircle::with_conn!(connection.conn(), c => {
            sqlx::query_as("SELECT DISTINCT plugin_id, caller FROM invocations ORDER BY plugin_id")
                .fetch_all(&mut *c)
                .await
                .expect("select")
        });
        assert_eq!(seen.len(), 2, "one pseudonym per plugin: {seen:?}");
        let (hello, points) = (&seen[0].1, &seen[1].1);
        assert!(first.contains(hello.as_str()), "{first} is greeted as {hello}");
        assert_ne!(hello, points, "different across plugins");
        drop(connection);
        host.stop().await;
    }
}
