//! The plugin registry end to end: upload and its checks, the four-eyes review, regions and
//! their inheritance, campaign windows and targeting, kill switches under load, rollback, and
//! changes reaching a second host on the same database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lifecircle::identity::admins::Role;
use lifecircle_tests::{Bundle, Reply, TestHost, dist, on_each_backend};
use reqwest::Method;
use serde_json::{Value, json};

/// The `hello` manifest with another version and `tail` appended.
fn hello_manifest(version: &str, tail: &str) -> String {
    let text = std::fs::read_to_string(dist().join("reference/hello/plugin.toml"))
        .expect("hello is built");
    format!(
        "{}\n{tail}",
        text.replacen(
            "version = \"0.1.0\"",
            &format!("version = \"{version}\""),
            1
        )
    )
}

fn component(bundle: &str) -> Vec<u8> {
    std::fs::read(dist().join(bundle).join("plugin.wasm")).expect("the bundle is built")
}

async fn admin(host: &TestHost, method: Method, path: &str, token: &str, body: Value) -> Reply {
    host.request(
        method,
        path,
        Some(token),
        Some(body.to_string().into_bytes()),
    )
    .await
}

/// Uploads `hello` at `version` as head office and has a reviewer approve it.
async fn approved_hello(host: &TestHost, reviewer: &str, version: &str, tail: &str) {
    let head = host.state.admin_token.clone();
    let uploaded = host
        .upload(
            "/admin/v1/plugins",
            &head,
            &hello_manifest(version, tail),
            &component("reference/hello"),
        )
        .await;
    assert_eq!(uploaded.status, 201, "{:?}", uploaded.body);
    let path = format!("/admin/v1/plugins/hello/versions/{version}/approve");
    let approved = admin(host, Method::POST, &path, reviewer, json!({"reason": "ok"})).await;
    assert_eq!(approved.status, 200, "{:?}", approved.body);
}

async fn enable(host: &TestHost, region: &str, body: Value) -> Reply {
    let head = host.state.admin_token.clone();
    let path = format!("/admin/v1/regions/{region}/plugins/hello");
    admin(host, Method::PUT, &path, &head, body).await
}

async fn create_region(host: &TestHost, region: &str) {
    let head = host.state.admin_token.clone();
    let path = format!("/admin/v1/regions/{region}");
    let reply = admin(
        host,
        Method::PUT,
        &path,
        &head,
        json!({"display_name": region}),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

/// The greeting `customer` in `region` gets, or the error code.
async fn greeting(host: &TestHost, customer: &str, region: &str) -> String {
    let token = host.token(customer, region);
    let reply = host.call(&token, "hello", "greet", json!({})).await;
    match reply.status {
        200 => reply.body["message"]
            .as_str()
            .and_then(|m| m.split(',').next())
            .unwrap_or_default()
            .to_owned(),
        _ => reply.code().to_owned(),
    }
}

async fn listed(host: &TestHost, customer: &str, region: &str) -> Vec<String> {
    let token = host.token(customer, region);
    let reply = host
        .request(Method::GET, "/v1/scenarios", Some(&token), None)
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body["scenarios"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

on_each_backend! {
    async fn an_uploaded_version_serves_only_after_review_and_enablement() {
        let host = TestHost::start(&[]).await;
        let head = host.state.admin_token.clone();
        let reviewer = host.admin_token("rita", Role::Reviewer, None).await;
        let viewer = host.admin_token("vic", Role::Viewer, None).await;
        let manifest = hello_manifest("0.1.0", "");
        let wasm = component("reference/hello");

        let uploaded = host.upload("/admin/v1/plugins", &head, &manifest, &wasm).await;
        assert_eq!(uploaded.status, 201, "{:?}", uploaded.body);
        assert_eq!(uploaded.body["status"], "submitted");
        assert_eq!(uploaded.body["requested"]["identity_fields"], json!(["tier", "tags"]));
        assert_eq!(greeting(&host, "c1", "cn").await, "plugin_not_found");

        let not_yet = enable(&host, "cn", json!({"version": "0.1.0"})).await;
        assert_eq!((not_yet.status, not_yet.code()), (409, "plugin_version_not_approved"));

        let approve = "/admin/v1/plugins/hello/versions/0.1.0/approve";
        let own = admin(&host, Method::POST, approve, &head, json!({"reason": "mine"})).await;
        assert_eq!((own.status, own.code()), (403, "review_own_upload"), "{:?}", own.body);
        let viewing = admin(&host, Method::POST, approve, &viewer, json!({"reason": "ok"})).await;
        assert_eq!((viewing.status, viewing.code()), (403, "admin_forbidden"));
        let unexplained = admin(&host, Method::POST, approve, &reviewer, json!({})).await;
        assert_eq!(unexplained.status, 400, "{:?}", unexplained.body);
        assert!(unexplained.body["message"].as_str().unwrap_or_default().contains("reason"));
        let too_much = json!({"reason": "ok", "grants": {"identity_fields": ["region"]}});
        let greedy = admin(&host, Method::POST, approve, &reviewer, too_much).await;
        assert_eq!(greedy.status, 400, "{:?}", greedy.body);
        assert!(greedy.body["message"].as_str().unwrap_or_default().contains("grants.identity_fields"));
        let grants = json!({"reason": "reviewed", "grants": {"identity_fields": ["tier"]}});
        let approved = admin(&host, Method::POST, approve, &reviewer, grants).await;
        assert_eq!(approved.status, 200, "{:?}", approved.body);
        assert_eq!(approved.body["status"], "approved");
        assert_eq!(approved.body["reviewed_by"], "rita");
        let again = admin(&host, Method::POST, approve, &reviewer, json!({"reason": "ok"})).await;
        assert_eq!((again.status, again.code()), (409, "plugin_already_reviewed"));

        let enabled = enable(&host, "cn", json!({"version": "0.1.0"})).await;
        assert_eq!(enabled.status, 200, "{:?}", enabled.body);
        assert_eq!(enabled.body["after"]["revision"], 1);
        assert_eq!(greeting(&host, "c1", "cn-fj").await, "Hello");
        assert_eq!(listed(&host, "c1", "cn-fj").await, ["hello"]);
        let token = host.token("c1", "cn-fj");
        let scenarios = host.request(Method::GET, "/v1/scenarios", Some(&token), None).await;
        let hello = &scenarios.body["scenarios"][0];
        assert_eq!((hello["name"].as_str(), hello["category"].as_str()), (Some("Hello"), Some("demo")));
        assert_eq!(hello["translations"]["zh"]["name"], "你好");
        // Granted `tier` only, though `tags` was asked for.
        let token = host.token("c1", "cn");
        let profile = host.call(&token, "hello", "profile", json!({})).await;
        assert_eq!(profile.status, 200, "{:?}", profile.body);
        assert!(profile.body["tags"].is_null(), "{:?}", profile.body);

        // The same bytes again: the stored version; other bytes under the same version: 409.
        let retry = host.upload("/admin/v1/plugins", &head, &manifest, &wasm).await;
        assert_eq!((retry.status, retry.body["status"].as_str()), (200, Some("approved")));
        let other = component("hostile/hostile-loop");
        let clash = host.upload("/admin/v1/plugins", &head, &manifest, &other).await;
        assert_eq!((clash.status, clash.code()), (409, "plugin_version_exists"), "{:?}", clash.body);

        let audit = host.request(Method::GET, "/admin/v1/audit", Some(&head), None).await;
        let actions: Vec<&str> = audit.body["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["action"].as_str())
            .collect();
        for action in ["plugin.upload", "plugin.approve", "enablement.put"] {
            assert!(actions.contains(&action), "{action} in {actions:?}");
        }
        host.stop().await;
    }

    async fn bad_uploads_are_refused_naming_the_problem_and_store_nothing() {
        let host = TestHost::start_with(&[], |config| {
            config.registry.component_bytes_max = 1_000_000;
            config.registry.manifest_bytes_max = 4_000;
        })
        .await;
        let head = host.state.admin_token.clone();
        let hello = hello_manifest("0.1.0", "");
        let undeclared_manifest = std::fs::read_to_string(
            dist().join("hostile/hostile-undeclared/plugin.toml"),
        )
        .expect("built");
        let padded = format!("# {}\n{hello}", "x".repeat(4_000));
        let cases: [(&str, String, Vec<u8>, &str); 6] = [
            ("oversized manifest", padded, component("reference/hello"), "registry.manifest_bytes_max"),
            (
                "undeclared import",
                undeclared_manifest,
                component("hostile/hostile-undeclared"),
                "lifecircle:scenario/store",
            ),
            ("corrupt component", hello.clone(), b"\0asm not really".to_vec(), "not a valid WebAssembly component"),
            ("oversized component", hello.clone(), vec![0u8; 1_000_001], "registry.component_bytes_max"),
            ("unknown manifest key", format!("colour = \"red\"\n{hello}"), component("reference/hello"), "colour"),
            (
                "defaults outside the schema",
                hello_manifest("0.1.0", "[config_schema]\ntype = \"object\"\n[config_schema.properties.greeting]\ntype = \"integer\"\n"),
                component("reference/hello"),
                "config.greeting",
            ),
        ];
        for (case, manifest, wasm, named) in cases {
            let reply = host.upload("/admin/v1/plugins", &head, &manifest, &wasm).await;
            assert_eq!((reply.status, reply.code()), (400, "plugin_invalid"), "{case}: {:?}", reply.body);
            let message = reply.body["message"].as_str().unwrap_or_default();
            assert!(message.contains(named), "{case}: {message}");
        }
        let no_component = host
            .request(Method::POST, "/admin/v1/plugins", Some(&head), Some(b"{}".to_vec()))
            .await;
        assert_eq!((no_component.status, no_component.code()), (400, "plugin_invalid"));
        assert_eq!(host.count("SELECT COUNT(*) FROM plugin_versions").await, 0);
        assert_eq!(host.count("SELECT COUNT(*) FROM plugin_artifacts").await, 0);
        host.stop().await;
    }

    async fn regions_inherit_what_runs_and_a_child_region_overrides_it() {
        let host = TestHost::start_with(&[], |config| {
            config.registry.config_bytes_max = 2_000;
        })
        .await;
        let reviewer = host.admin_token("rita", Role::Reviewer, None).await;
        let schema = "[config_schema]\ntype = \"object\"\nadditionalProperties = false\n\
                      [config_schema.properties.greeting]\ntype = \"string\"\nmaxLength = 20\n";
        approved_hello(&host, &reviewer, "0.1.0", schema).await;
        for region in ["cn-fj", "cn-fj-xm", "cn-gd"] {
            create_region(&host, region).await;
        }
        let head = host.state.admin_token.clone();
        let orphan = admin(&host, Method::PUT, "/admin/v1/regions/cn-sh-pd", &head, json!({"display_name": "x"})).await;
        assert_eq!((orphan.status, orphan.code()), (404, "region_not_found"));

        let on = enable(&host, "cn", json!({"version": "0.1.0", "config": {"greeting": "Ni hao"}})).await;
        assert_eq!(on.status, 200, "{:?}", on.body);
        assert_eq!(greeting(&host, "a", "cn-fj-xm").await, "Ni hao");
        assert_eq!(greeting(&host, "b", "cn-gd").await, "Ni hao");

        let fj = json!({"version": "0.1.0", "config": {"greeting": "Fujian hi"}});
        assert_eq!(enable(&host, "cn-fj", fj).await.status, 200);
        assert_eq!(greeting(&host, "a", "cn-fj-xm").await, "Fujian hi");
        assert_eq!(greeting(&host, "b", "cn-gd").await, "Ni hao");

        let off = enable(&host, "cn-fj", json!({"enabled": false})).await;
        assert_eq!(off.status, 200, "{:?}", off.body);
        assert_eq!(greeting(&host, "a", "cn-fj-xm").await, "plugin_not_found");
        assert!(listed(&host, "a", "cn-fj-xm").await.is_empty());
        assert_eq!(greeting(&host, "b", "cn-gd").await, "Ni hao");

        let removed = admin(&host, Method::DELETE, "/admin/v1/regions/cn-fj/plugins/hello", &head, json!(null)).await;
        assert_eq!(removed.status, 200, "{:?}", removed.body);
        assert_eq!(greeting(&host, "a", "cn-fj-xm").await, "Ni hao");

        let typo = enable(&host, "cn-gd", json!({"version": "0.1.0", "config": {"greeting": 5, "colour": "red"}})).await;
        assert_eq!((typo.status, typo.code()), (400, "enablement_invalid"), "{:?}", typo.body);
        let message = typo.body["message"].as_str().unwrap_or_default();
        assert!(message.contains("config.greeting") && message.contains("config.colour"), "{message}");

        let huge = json!({"version": "0.1.0", "config": {"greeting": "x".repeat(2_000)}});
        let too_big = enable(&host, "cn-gd", huge).await;
        assert_eq!((too_big.status, too_big.code()), (400, "enablement_invalid"));
        let message = too_big.body["message"].as_str().unwrap_or_default();
        assert!(message.contains("registry.config_bytes_max"), "{message}");

        let branch = host.admin_token("fj-ops", Role::BranchAdmin, Some("cn-fj")).await;
        let path = "/admin/v1/regions/cn-gd/plugins/hello";
        let elsewhere = admin(&host, Method::PUT, path, &branch, json!({"version": "0.1.0"})).await;
        assert_eq!((elsewhere.status, elsewhere.code()), (403, "admin_forbidden"));
        let view = host.request(Method::GET, "/admin/v1/regions/cn-fj-xm/plugins", Some(&branch), None).await;
        assert_eq!(view.status, 200, "{:?}", view.body);
        assert_eq!(view.body["effective"][0]["from_region"], "cn");
        host.stop().await;
    }

    async fn a_campaign_window_and_targeting_decide_who_sees_the_scenario() {
        let host = TestHost::start(&[]).await;
        let reviewer = host.admin_token("rita", Role::Reviewer, None).await;
        approved_hello(&host, &reviewer, "0.1.0", "").await;
        let start = 1_900_000_000_000_i64;
        let end = start + 7 * 24 * 3600 * 1000;
        let campaign = json!({
            "version": "0.1.0",
            "starts_at_ms": start,
            "ends_at_ms": end,
            "tiers": ["gold"],
            "tags": ["vip"],
        });
        assert_eq!(enable(&host, "cn", campaign).await.status, 200);
        // Enroll both customers, then give one of them the tier and the tag.
        assert_eq!(greeting(&host, "gold-vip", "cn").await, "plugin_not_found");
        assert_eq!(greeting(&host, "plain", "cn").await, "plugin_not_found");
        let head = host.state.admin_token.clone();
        let patch = json!({"tier": "gold", "tags": ["vip", "fj"]});
        let patched = admin(&host, Method::PATCH, "/admin/v1/customers/gold-vip", &head, patch).await;
        assert_eq!(patched.status, 200, "{:?}", patched.body);

        let clock = &host.state.registry.clock;
        clock.set_ms(start - 1);
        assert_eq!(greeting(&host, "gold-vip", "cn").await, "plugin_not_found");
        assert!(listed(&host, "gold-vip", "cn").await.is_empty());
        clock.set_ms(start);
        assert_eq!(greeting(&host, "gold-vip", "cn").await, "Hello");
        assert_eq!(listed(&host, "gold-vip", "cn").await, ["hello"]);
        assert_eq!(greeting(&host, "plain", "cn").await, "plugin_not_found");
        assert!(listed(&host, "plain", "cn").await.is_empty());
        clock.set_ms(end);
        assert_eq!(greeting(&host, "gold-vip", "cn").await, "plugin_not_found");
        clock.set_ms(0);
        host.stop().await;
    }

    async fn rollback_restores_the_version_that_ran_before() {
        let host = TestHost::start(&[]).await;
        let reviewer = host.admin_token("rita", Role::Reviewer, None).await;
        approved_hello(&host, &reviewer, "0.1.0", "").await;
        let hi = hello_manifest("0.2.0", "").replace("greeting = \"Hello\"", "greeting = \"Hi\"");
        let head = host.state.admin_token.clone();
        let uploaded = host.upload("/admin/v1/plugins", &head, &hi, &component("reference/hello")).await;
        assert_eq!(uploaded.status, 201, "{:?}", uploaded.body);
        let approve = "/admin/v1/plugins/hello/versions/0.2.0/approve";
        assert_eq!(admin(&host, Method::POST, approve, &reviewer, json!({"reason": "ok"})).await.status, 200);

        let rollback = "/admin/v1/regions/cn/plugins/hello/rollback";
        assert_eq!(enable(&host, "cn", json!({"version": "0.1.0"})).await.status, 200);
        let nothing = admin(&host, Method::POST, rollback, &head, json!(null)).await;
        assert_eq!((nothing.status, nothing.code()), (409, "rollback_unavailable"));
        assert_eq!(greeting(&host, "c", "cn").await, "Hello");
        assert_eq!(enable(&host, "cn", json!({"version": "0.2.0"})).await.status, 200);
        assert_eq!(greeting(&host, "c", "cn").await, "Hi");
        let rolled = admin(&host, Method::POST, rollback, &head, json!(null)).await;
        assert_eq!(rolled.status, 200, "{:?}", rolled.body);
        assert_eq!(rolled.body["after"]["version"], "0.1.0");
        assert_eq!(rolled.body["after"]["revision"], 3);
        assert_eq!(greeting(&host, "c", "cn").await, "Hello");
        host.stop().await;
    }

    async fn a_change_on_one_host_reaches_a_second_host_on_the_same_database() {
        let first = TestHost::start(&[]).await;
        let second = first.start_replica().await;
        let reviewer = first.admin_token("rita", Role::Reviewer, None).await;
        approved_hello(&first, &reviewer, "0.1.0", "").await;
        assert_eq!(greeting(&second, "c", "cn").await, "plugin_not_found");

        let on = json!({"version": "0.1.0", "config": {"greeting": "Salam"}});
        assert_eq!(enable(&first, "cn", on).await.status, 200);
        assert_eq!(eventually(&second, "Salam").await, "Salam");
        let changed = json!({"version": "0.1.0", "config": {"greeting": "Selamat"}});
        assert_eq!(enable(&first, "cn", changed).await.status, 200);
        assert_eq!(eventually(&second, "Selamat").await, "Selamat");
        let head = first.state.admin_token.clone();
        let kill = "/admin/v1/regions/cn/plugins/hello/kill";
        assert_eq!(admin(&first, Method::POST, kill, &head, json!({"reason": "incident"})).await.status, 200);
        assert_eq!(eventually(&second, "plugin_killed").await, "plugin_killed");
        second.stop().await;
        first.stop().await;
    }
}

/// What `host` greets a customer in `cn` with once it shows `expected`, polling for up to ten
/// seconds (the poll interval is 250 ms; this bounds a broken host, it measures nothing).
async fn eventually(host: &TestHost, expected: &str) -> String {
    let mut last = String::new();
    for _ in 0..200 {
        last = greeting(host, "c", "cn").await;
        if last == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_stops_new_calls_at_once_while_others_are_running() {
    let host = Arc::new(TestHost::start(&[]).await);
    let reviewer = host.admin_token("rita", Role::Reviewer, None).await;
    approved_hello(&host, &reviewer, "0.1.0", "").await;
    assert_eq!(
        enable(&host, "cn", json!({"version": "0.1.0"}))
            .await
            .status,
        200
    );
    create_region(&host, "cn-fj").await;
    let token = host.token("c", "cn-fj");
    let killed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (host, token, killed, stop) =
                (host.clone(), token.clone(), killed.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let after_kill = killed.load(Ordering::SeqCst);
                    let reply = host.call(&token, "hello", "echo", json!({"n": 1})).await;
                    seen.push((
                        after_kill,
                        reply.status,
                        reply.code().to_owned(),
                        reply.body,
                    ));
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let head = host.state.admin_token.clone();
    let kill = "/admin/v1/regions/cn-fj/plugins/hello/kill";
    let reply = admin(
        &host,
        Method::POST,
        kill,
        &head,
        json!({"reason": "refund storm"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    killed.store(true, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut served = 0;
    let mut stopped_after_kill = 0;
    for caller in callers {
        for (after_kill, status, code, body) in caller.await.expect("caller") {
            match status {
                200 => {
                    assert!(!after_kill, "a call started after the kill ran");
                    assert_eq!(body, json!({"echo": {"n": 1}}));
                    served += 1;
                }
                503 => {
                    assert_eq!(code, "plugin_killed");
                    stopped_after_kill += usize::from(after_kill);
                }
                other => panic!("a call saw a half-applied kill: {other} {code}"),
            }
        }
    }
    assert!(
        served > 0 && stopped_after_kill > 0,
        "{served} {stopped_after_kill}"
    );
    // A region beside it runs on; reviving restores the killed one.
    assert_eq!(greeting(&host, "d", "cn-gd").await, "Hello");
    let revived = admin(&host, Method::DELETE, kill, &head, json!(null)).await;
    assert_eq!(revived.status, 200, "{:?}", revived.body);
    assert_eq!(greeting(&host, "c", "cn-fj").await, "Hello");
    Arc::try_unwrap(host)
        .unwrap_or_else(|_| panic!("callers are done"))
        .stop()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_mode_serves_a_changed_bundle_without_a_restart() {
    let host = TestHost::start_with(&[Bundle::new("reference/hello")], |config| {
        config.registry.dev_watch_interval_ms = 50;
    })
    .await;
    assert_eq!(greeting(&host, "c", "cn").await, "Hello");
    let manifest = host.state.config.plugins_dir.join("hello/plugin.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    let changed = text.replace("greeting = \"Hello\"", "greeting = \"Hej\"");
    std::fs::write(&manifest, &changed).expect("write");
    assert_eq!(eventually(&host, "Hej").await, "Hej");
    // Versions are immutable: the changed bundle is stored as a development version beside it.
    let head = host.state.admin_token.clone();
    let listed = host
        .request(
            Method::GET,
            "/admin/v1/plugins?plugin=hello",
            Some(&head),
            None,
        )
        .await;
    let versions: Vec<&str> = listed.body["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["version"].as_str())
        .collect();
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert!(
        versions.iter().any(|v| v.starts_with("0.1.0+dev.")),
        "{versions:?}"
    );
    host.stop().await;
}

on_each_backend! {
    async fn a_partner_uploads_its_own_plugins_only() {
        let host = TestHost::start(&[]).await;
        let head = host.state.admin_token.clone();
        let partner = json!({"name": "Water Co", "plugins": ["hello"]});
        assert_eq!(admin(&host, Method::PUT, "/admin/v1/partners/water-co", &head, partner).await.status, 200);
        let issued = admin(&host, Method::POST, "/admin/v1/partners/water-co/keys", &head, json!({"name": "ci"})).await;
        let key = issued.body["key"].as_str().expect("a key").to_owned();
        let hello = hello_manifest("0.1.0", "");
        let uploaded = host.upload("/partner/v1/plugins", &key, &hello, &component("reference/hello")).await;
        assert_eq!(uploaded.status, 201, "{:?}", uploaded.body);
        assert_eq!(uploaded.body["uploaded_by"], "partner:water-co");
        // Head office did not upload it, so it may approve it.
        let approve = "/admin/v1/plugins/hello/versions/0.1.0/approve";
        assert_eq!(admin(&host, Method::POST, approve, &head, json!({"reason": "ok"})).await.status, 200);

        let other = std::fs::read_to_string(dist().join("reference/points-demo/plugin.toml")).expect("built");
        let refused = host.upload("/partner/v1/plugins", &key, &other, &component("reference/points-demo")).await;
        assert_eq!((refused.status, refused.code()), (403, "partner_forbidden"), "{:?}", refused.body);
        // (A small body: the key is refused before the upload is read.)
        let forged = host.upload("/partner/v1/plugins", "lcp_forged", &hello, b"\0asm").await;
        assert_eq!((forged.status, forged.code()), (401, "partner_key_invalid"));
        assert_eq!(host.count("SELECT COUNT(*) FROM plugin_versions").await, 1);
        host.stop().await;
    }
}
