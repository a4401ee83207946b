//! Every reference plugin's README examples, run against a real host in the development
//! region with the plugins' manifest settings, on each backend.
//!
//! An example is a fenced `http` block (`METHOD /path`, headers, a blank line, a JSON body)
//! followed by a fenced `json` block, optionally `json 422`: the status (200 when not given)
//! and fields the answer must have. Objects match when every field shown matches; arrays
//! element by element. A string `"<name>"` in an answer matches any value and names it; later
//! requests replace `<name>` with it. Requests without an `Authorization` header are the
//! README's customer's; `Authorization: Bearer <tea-house key>` is a key of partner
//! `tea-house` for the plugin. A comment `<!-- example-setup: points=N -->` gives the
//! customer N points first (awarded from the plugin's budget).

use std::collections::BTreeMap;

use lifecircle_tests::{Bundle, TestHost, on_each_backend, repo_root};
use serde_json::Value;

const REGION: &str = "dev";

const PLUGINS: [&str; 4] = [
    "utility-payments",
    "merchant-coupons",
    "spin-wheel",
    "points-mall",
];

const BUNDLES: [Bundle; 4] = [
    Bundle::new("reference/utility-payments"),
    Bundle::new("reference/merchant-coupons"),
    Bundle::new("reference/spin-wheel"),
    Bundle::new("reference/points-mall"),
];

/// A request read from an `http` block, waiting for its answer block.
type Request = (reqwest::Method, String, Vec<(String, String)>, String);

/// One request and the answer it must get.
#[derive(Debug)]
struct Example {
    method: reqwest::Method,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
    status: u16,
    expected: Value,
}

/// The examples of a README, and the points its customer starts with.
fn examples(readme: &str) -> (Vec<Example>, i64) {
    let mut examples = Vec::new();
    let mut points = 0;
    let mut lines = readme.lines();
    let mut pending: Option<Request> = None;
    while let Some(line) = lines.next() {
        if let Some(setup) = line.trim().strip_prefix("<!-- example-setup: points=") {
            points = setup
                .trim_end_matches("-->")
                .trim()
                .parse()
                .expect("example-setup: points=N");
            continue;
        }
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        let mut info = info.split_whitespace();
        match info.next() {
            Some("http") => {
                assert!(pending.is_none(), "an http block without its answer");
                let (request, body) = match block.iter().position(|l| l.trim().is_empty()) {
                    Some(blank) => (&block[..blank], block[blank + 1..].join("\n")),
                    None => (&block[..], String::new()),
                };
                let (method, path) = request[0].split_once(' ').expect("METHOD /path");
                let headers = request[1..]
                    .iter()
                    .map(|h| {
                        let (name, value) = h.split_once(':').expect("Name: value");
                        (name.trim().to_owned(), value.trim().to_owned())
                    })
                    .collect();
                let method = method.parse().expect("an HTTP method");
                pending = Some((method, path.trim().to_owned(), headers, body));
            }
            Some("json") => {
                let Some((method, path, headers, body)) = pending.take() else {
                    continue;
                };
                let status = info.next().map_or(200, |s| s.parse().expect("a status"));
                let expected = serde_json::from_str(&block.join("\n"))
                    .unwrap_or_else(|e| panic!("answer of {path} is not JSON: {e}"));
                examples.push(Example {
                    method,
                    path,
                    headers,
                    body,
                    status,
                    expected,
                });
            }
            _ => {}
        }
    }
    assert!(pending.is_none(), "an http block without its answer");
    (examples, points)
}

/// Replaces every `<name>` bound so far.
fn fill(text: &str, names: &BTreeMap<String, String>) -> String {
    names.iter().fold(text.to_owned(), |text, (name, value)| {
        text.replace(&format!("<{name}>"), value)
    })
}

/// Whether `actual` has what `expected` shows, binding `"<name>"`s; the first mismatch.
fn matches(
    expected: &Value,
    actual: &Value,
    names: &mut BTreeMap<String, String>,
    at: &str,
) -> Result<(), String> {
    match (expected, actual) {
        (Value::String(s), _) if s.starts_with('<') && s.ends_with('>') => {
            let name = &s[1..s.len() - 1];
            let value = match actual {
                Value::String(v) => v.clone(),
                Value::Null => return Err(format!("{at}: expected a value for {s}")),
                other => other.to_string(),
            };
            match names.get(name) {
                Some(bound) if *bound != value => {
                    Err(format!("{at}: {s} was {bound:?}, now {value:?}"))
                }
                _ => {
                    names.insert(name.to_owned(), value);
                    Ok(())
                }
            }
        }
        (Value::Object(expected), Value::Object(actual)) => {
            for (key, value) in expected {
                let inner = actual.get(key).unwrap_or(&Value::Null);
                matches(value, inner, names, &format!("{at}.{key}"))?;
            }
            Ok(())
        }
        (Value::Array(expected), Value::Array(actual)) => {
            if expected.len() > actual.len() {
                return Err(format!(
                    "{at}: {} elements, expected {}",
                    actual.len(),
                    expected.len()
                ));
            }
            for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
                matches(e, a, names, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (expected, actual) if expected == actual => Ok(()),
        (expected, actual) => Err(format!("{at}: expected {expected}, got {actual}")),
    }
}

/// Awards `points` from `plugin`'s development budget to `customer`.
async fn give_points(host: &TestHost, plugin: &str, customer: &str, points: i64) {
    use lifecircle::ledger::{self, ADMIN_SCOPE, Operation, Request};
    let mut transaction = host.state.db.write.begin().await.expect("begin");
    let request = Request {
        scope: ADMIN_SCOPE,
        key: &format!("readme/{customer}"),
        now_ms: ledger::now_ms(),
        memo: "earned elsewhere",
        id: None,
    };
    let award = Operation::Award {
        customer: customer.to_owned(),
        amount: points,
        expires_at_ms: ledger::now_ms() + 365 * 86_400_000,
    };
    ledger::apply(&mut transaction.conn(), &request, plugin, REGION, &award)
        .await
        .expect("award");
    transaction.commit().await.expect("commit");
}

/// The host, with the biller simulator the development billers call moved to a free port.
async fn setup() -> TestHost {
    let simulator = lifecircle_tests::biller_simulator().await;
    let host = TestHost::start_with(&BUNDLES, |config| {
        config.registry.dev_regions = vec![REGION.into()];
    })
    .await;
    let bills = host
        .state
        .registry
        .deployment("utility-payments", REGION)
        .expect("bill payments run in dev");
    let settings = bills
        .config
        .as_json()
        .replace("http://127.0.0.1:8090", &simulator);
    host.configure(
        REGION,
        "utility-payments",
        serde_json::json!({
            "outbound_hosts": ["127.0.0.1"],
            "config": serde_json::from_str::<Value>(&settings).expect("settings"),
        }),
    )
    .await;
    for plugin in PLUGINS {
        host.fund(REGION, plugin, 1_000_000, &format!("readme-{plugin}"))
            .await;
    }
    host
}

on_each_backend! {
    async fn every_reference_plugins_readme_examples_run_as_written() {
        let host = setup().await;
        for plugin in PLUGINS {
            let path = repo_root().join("plugins").join(plugin).join("README.md");
            let readme = std::fs::read_to_string(&path).expect("README");
            let (examples, points) = examples(&readme);
            assert!(examples.len() >= 4, "{plugin}'s README has its examples");
            let customer = format!("readme-{plugin}");
            if points > 0 {
                give_points(&host, plugin, &customer, points).await;
            }
            let token = host.token(&customer, REGION);
            let mut names = BTreeMap::new();
            for (n, example) in examples.iter().enumerate() {
                let mut bearer = token.clone();
                let mut headers = Vec::new();
                for (name, value) in &example.headers {
                    if name.eq_ignore_ascii_case("authorization") {
                        let partner = value
                            .strip_prefix("Bearer <")
                            .and_then(|v| v.strip_suffix(" key>"))
                            .expect("Authorization: Bearer <partner key>");
                        bearer = host.partner_key(partner, &[plugin]).await;
                    } else {
                        headers.push((name.to_lowercase(), fill(value, &names)));
                    }
                }
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                let path = fill(&example.path, &names);
                let body = fill(&example.body, &names);
                let reply = host
                    .request_with_headers(
                        example.method.clone(),
                        &path,
                        Some(&bearer),
                        (!body.is_empty()).then(|| body.into_bytes()),
                        &headers,
                    )
                    .await;
                let context = format!("{plugin} README example {} ({} {path})", n + 1, example.method);
                assert_eq!(reply.status, example.status, "{context}: {reply:?}");
                if let Err(mismatch) = matches(&example.expected, &reply.body, &mut names, "answer") {
                    panic!("{context}: {mismatch}\n{:#}", reply.body);
                }
            }
        }
        host.stop().await;
    }
}
