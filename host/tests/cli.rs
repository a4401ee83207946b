//! The `lifecircle` command as a user runs it: the real binary, its printed output, and the
//! curl line `serve` prints, executed as printed.
//!
//! These need the reference bundles in `plugins/dist/reference` (`make test` builds them
//! first).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ sits in the repository")
        .to_owned()
}

fn reference_plugins() -> PathBuf {
    let dir = repo_root().join("plugins/dist/reference");
    assert!(
        dir.join("hello/plugin.wasm").is_file(),
        "build the plugins first: make plugins (make test does)"
    );
    dir
}

fn lifecircle(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lifecircle"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env(
            "LIFECIRCLE_CACHE_DIR",
            repo_root().join("target/lifecircle-test-cache"),
        )
        .env("LIFECIRCLE_LOG", "warn")
        // Each host's biller simulator on a port of its own; the banner test takes the
        // development port the reference billers call.
        .env("LIFECIRCLE_DEV_BILLER_LISTEN", "\"127.0.0.1:0\"");
    command
}

/// Lines of `child`'s stdout, read on a thread so the test can time out.
fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end, so the host never writes into a closed pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    receiver
}

#[test]
fn serve_prints_a_banner_and_a_curl_line_that_works_as_printed() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = lifecircle(data.path())
        .env("LIFECIRCLE_DEV_BILLER_LISTEN", "\"127.0.0.1:8090\"")
        .args(["serve", "--listen", "127.0.0.1:0", "--plugins"])
        .arg(reference_plugins())
        .stdout(Stdio::piped())
        .spawn()
        .expect("lifecircle starts");
    let lines = stdout_lines(&mut child);
    let mut banner = Vec::new();
    let curl = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .expect("serve prints its banner");
        if line.trim_start().starts_with("curl ") {
            break line.trim().to_owned();
        }
        banner.push(line);
    };
    assert!(
        banner[0].starts_with("Lifecircle is serving on http://127.0.0.1:"),
        "{banner:?}"
    );
    assert_eq!(banner[1], "Plugins enabled in region dev:");
    assert!(
        banner.iter().any(|l| l.trim_start().starts_with("hello ")),
        "{banner:?}"
    );
    assert_eq!(banner.last().map(String::as_str), Some("Try it:"));

    let output = Command::new("sh")
        .arg("-c")
        .arg(&curl)
        .output()
        .expect("sh runs the curl line");
    assert!(output.status.success(), "{curl}: {output:?}");
    let body: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the curl line answers JSON");
    assert_eq!(body, serde_json::json!({"echo": {"hello": "world"}}));

    // The walkthrough of the reference scenarios works as printed too, each `<value>` taken
    // from an earlier answer: a bill, the points, a spin, a coupon redeemed at the till, a mall
    // order cancelled for the points back.
    let mut walkthrough = Vec::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("the walkthrough follows");
        if line == "Press Ctrl-C to stop." {
            break;
        }
        walkthrough.push(line);
    }
    assert!(
        walkthrough.iter().any(|l| l.starts_with("The loop")),
        "{walkthrough:?}"
    );
    assert!(
        walkthrough
            .iter()
            .any(|l| l.contains("tea-house") && l.contains("lcp_dev_")),
        "the till's development key is printed: {walkthrough:?}"
    );
    let run = |needle: &str, values: &[(&str, &str)]| {
        let line = walkthrough
            .iter()
            .find(|line| line.contains(needle) && line.trim_start().starts_with("curl "))
            .unwrap_or_else(|| panic!("no {needle} line: {walkthrough:?}"));
        let line = values
            .iter()
            .fold(line.trim().to_owned(), |line, (name, value)| {
                line.replace(name, value)
            });
        let output = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .output()
            .expect("sh runs the curl line");
        serde_json::from_slice::<serde_json::Value>(&output.stdout)
            .unwrap_or_else(|_| panic!("{line}: {output:?}"))
    };
    let paid = run("utility-payments/pay", &[]);
    assert_eq!(paid["receipt"]["status"], "paid", "{paid}");
    let points = run("/v1/points", &[]);
    assert_eq!(
        points["total"], 1510,
        "welcome points and the bill's: {points}"
    );
    let spun = run("spin-wheel/spin", &[]);
    assert!(spun["outcome"].is_string(), "{spun}");
    let claimed = run(r#"{"campaign":"tea-10"}"#, &[]);
    assert_eq!(claimed["coupon"]["campaign"], "tea-10", "{claimed}");
    let code = claimed["coupon"]["code"].as_str().expect("a code");
    let redeemed = run("merchant-coupons/redeem", &[("<code>", code)]);
    assert_eq!(redeemed["pay_fen"], 5800, "{redeemed}");
    let catalog = run("points-mall/catalog", &[]);
    assert!(catalog["items"].is_array(), "{catalog}");
    let ordered = run("points-mall/redeem", &[]);
    let order = ordered["order"]["id"].as_str().expect("an order");
    let cancelled = run("points-mall/cancel", &[("<order>", order)]);
    assert_eq!(cancelled["order"]["status"], "cancelled", "{cancelled}");

    // SIGTERM: the host stops gracefully and exits 0.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().expect("lifecircle exits");
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn token_prints_one_signed_token() {
    let data = tempfile::tempdir().expect("tempdir");
    let output = lifecircle(data.path())
        .args([
            "token",
            "--customer",
            "6222000011112222",
            "--region",
            "cn-fj",
        ])
        .output()
        .expect("lifecircle runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let token = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert_eq!(token.split('.').count(), 3, "{token}");
}

#[test]
fn token_refuses_a_malformed_region_with_a_clear_message() {
    let data = tempfile::tempdir().expect("tempdir");
    let output = lifecircle(data.path())
        .args(["token", "--customer", "c1", "--region", "Fujian Province"])
        .output()
        .expect("lifecircle runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--region must be"), "{stderr}");
}

#[test]
fn a_typo_in_the_config_file_stops_the_host_naming_the_key() {
    let data = tempfile::tempdir().expect("tempdir");
    let file = data.path().join("lifecircle.toml");
    std::fs::write(&file, "listne = \"127.0.0.1:9\"\n").expect("write");
    let output = lifecircle(data.path())
        .arg("--config")
        .arg(&file)
        .arg("serve")
        .output()
        .expect("lifecircle runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listne"), "{stderr}");
    assert!(stderr.contains("lifecircle.toml"), "{stderr}");
}

/// Starts `serve` on `data` and returns it with the address it serves on.
fn serve(data: &Path) -> (Child, String) {
    let mut child = lifecircle(data)
        .args(["serve", "--listen", "127.0.0.1:0", "--plugins"])
        .arg(reference_plugins())
        .stdout(Stdio::piped())
        .spawn()
        .expect("lifecircle starts");
    let lines = stdout_lines(&mut child);
    let first = lines
        .recv_timeout(Duration::from_secs(120))
        .expect("serve prints its banner");
    let address = first
        .strip_prefix("Lifecircle is serving on ")
        .expect("the banner names the address")
        .to_owned();
    (child, address)
}

/// The status code of `curl -X method url` with `token`.
fn curl_status(method: &str, url: &str, token: &str) -> String {
    let output = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            method,
            url,
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "-H",
            "Idempotency-Key: cli-test",
            "-H",
            "Content-Type: application/json",
        ])
        .args(["-d", r#"{"points": 10}"#])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn admin_create_token_prints_a_token_scoped_to_its_role_and_region() {
    let data = tempfile::tempdir().expect("tempdir");
    let create = |args: &[&str]| {
        lifecircle(data.path())
            .args(["admin", "create-token"])
            .args(args)
            .output()
            .expect("lifecircle runs")
    };
    let output = create(&[
        "--role",
        "branch_admin",
        "--region",
        "cn-fj",
        "--name",
        "fj-ops",
    ]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    assert_eq!(
        stdout.lines().count(),
        1,
        "the token alone on stdout: {stdout}"
    );
    let token = stdout.trim().to_owned();
    assert!(token.starts_with("lca_"), "{token}");
    let again = create(&["--role", "viewer", "--name", "fj-ops"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{again:?}"
    );
    let no_region = create(&["--role", "branch_admin", "--name", "gd-ops"]);
    assert!(!no_region.status.success());
    assert!(
        String::from_utf8_lossy(&no_region.stderr).contains("--region"),
        "{no_region:?}"
    );

    let (mut child, address) = serve(data.path());
    let budget = |region: &str| format!("{address}/admin/v1/budgets/hello/{region}");
    assert_eq!(curl_status("POST", &budget("cn-fj"), &token), "200");
    assert_eq!(curl_status("POST", &budget("cn-gd"), &token), "403");
    assert_eq!(curl_status("GET", &budget("cn-fj"), "lca_wrong"), "401");
    child.kill().expect("kill");
    child.wait().expect("exits");
}

#[test]
fn admin_import_customers_lands_good_lines_reports_bad_ones_and_is_idempotent() {
    let data = tempfile::tempdir().expect("tempdir");
    let file = data.path().join("customers.jsonl");
    std::fs::write(
        &file,
        "{\"customer_number\": \"c1\", \"region\": \"cn-fj\", \"tags\": [\"vip\"]}\n\
         {\"customer_number\": \"c2\", \"region\": \"cn-fj\"}\n\
         {\"customer_number\": \"c3\"}\n\
         {\"customer_number\": \"c4\", \"region\": \"cn\", \"status\": \"frozen\"}\n",
    )
    .expect("write");
    let import = || {
        let output = lifecircle(data.path())
            .args(["admin", "import-customers"])
            .arg(&file)
            .output()
            .expect("lifecircle runs");
        assert!(output.status.success(), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(stderr.contains("lines"), "progress on stderr: {stderr}");
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("a JSON summary")
    };
    let first = import();
    assert_eq!(
        (&first["inserted"], &first["rejected"]),
        (&3.into(), &1.into()),
        "{first}"
    );
    assert_eq!(first["errors"][0]["line"], 3);
    assert_eq!(first["errors"][0]["field"], "region");
    let second = import();
    assert_eq!(
        (&second["inserted"], &second["unchanged"]),
        (&0.into(), &3.into()),
        "{second}"
    );
}

/// Runs `lifecircle admin ARGS` against the host at `url` with `token`: exit code, stdout,
/// stderr.
fn admin(data: &Path, url: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let output = lifecircle(data)
        .arg("admin")
        .args(args)
        .args(["--url", url])
        .env("LIFECIRCLE_CLI_TOKEN", token)
        .output()
        .expect("lifecircle runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn create_token(data: &Path, role: &str, name: &str) -> String {
    let output = lifecircle(data)
        .args(["admin", "create-token", "--role", role, "--name", name])
        .output()
        .expect("lifecircle runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A child process killed when the test ends, passed or failed, so no host outlives it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn admin_commands_upload_review_enable_kill_and_roll_back_on_a_running_host() {
    let data = tempfile::tempdir().expect("tempdir");
    let (child, url) = serve(data.path());
    let _host = KillOnDrop(child);
    let ops = create_token(data.path(), "head_office", "ops");
    let rita = create_token(data.path(), "reviewer", "rita");
    // A new version of hello: another version and greeting, the same component.
    let bundle = data.path().join("hello-0.2.0");
    std::fs::create_dir_all(&bundle).expect("mkdir");
    let source = reference_plugins().join("hello");
    std::fs::copy(source.join("plugin.wasm"), bundle.join("plugin.wasm")).expect("copy");
    let manifest = std::fs::read_to_string(source.join("plugin.toml"))
        .expect("manifest")
        .replace("version = \"0.1.0\"", "version = \"0.2.0\"")
        .replace("greeting = \"Hello\"", "greeting = \"Hi\"");
    std::fs::write(bundle.join("plugin.toml"), manifest).expect("write");
    let dir = bundle.to_str().expect("utf-8 path");
    let data = data.path();

    let (code, out, err) = admin(data, &url, &ops, &["plugins", "upload", dir]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("PLUGIN  VERSION  STATUS"), "{out}");
    assert!(
        lines[1].starts_with("hello   0.2.0    submitted  ops"),
        "{out}"
    );
    assert!(
        out.contains("identity fields: [\"tier\",\"tags\"]"),
        "{out}"
    );

    let (code, _, err) = admin(
        data,
        &url,
        &ops,
        &["plugins", "approve", "hello", "0.2.0", "--reason", "mine"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("error: review_own_upload: "), "{err}");
    let approve = [
        "plugins",
        "approve",
        "hello",
        "0.2.0",
        "--grant-identity-field",
        "tier",
        "--reason",
        "checked",
    ];
    let (code, out, err) = admin(data, &url, &rita, &approve);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("approved") && out.contains("rita"), "{out}");

    let (code, out, err) = admin(
        data,
        &url,
        &ops,
        &["regions", "put", "cn", "--display-name", "China"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().nth(1).is_some_and(|l| l.starts_with("cn ")),
        "{out}"
    );
    let enable = [
        "enable",
        "hello",
        "--region",
        "cn",
        "--version",
        "0.2.0",
        "--settings",
        r#"{"greeting": "Hi there"}"#,
    ];
    let (code, out, err) = admin(data, &url, &ops, &enable);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "hello in cn: enabled, version 0.2.0 (revision 1; before: -)"
    );
    let (_, out, _) = admin(data, &url, &ops, &["regions", "show", "cn"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("hello ") && l.contains("running") && l.contains("0.2.0")),
        "{out}"
    );

    let (code, out, err) = admin(
        data,
        &url,
        &ops,
        &["kill", "hello", "--region", "cn", "--reason", "incident 42"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "killed hello in cn and below: incident 42");
    let (_, out, _) = admin(data, &url, &ops, &["regions", "show", "cn"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("hello ") && l.contains("killed") && l.contains("incident 42")),
        "{out}"
    );
    let (code, out, err) = admin(data, &url, &ops, &["revive", "hello", "--region", "cn"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("revived hello in cn"), "{out}");
    let (code, _, err) = admin(data, &url, &ops, &["rollback", "hello", "--region", "cn"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("error: rollback_unavailable: "), "{err}");

    let (code, out, _) = admin(data, &url, &ops, &["plugins", "list", "--json"]);
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    // Every development bundle's version, and the one uploaded.
    let bundles = std::fs::read_dir(reference_plugins())
        .expect("the reference bundles")
        .count();
    assert_eq!(
        listed["versions"].as_array().map(Vec::len),
        Some(bundles + 1),
        "{out}"
    );

    let (code, _, err) = admin(data, &url, "not-a-token", &["regions", "list"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("admin_token_invalid"), "{err}");
    let (code, _, err) = admin(data, "http://127.0.0.1:9", &ops, &["regions", "list"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the host"), "{err}");
}

/// `curl -s -X method url` with `token` and a JSON body: the answer's JSON.
fn curl_json(method: &str, url: &str, token: &str, body: &str) -> serde_json::Value {
    let output = Command::new("curl")
        .args(["-s", "-X", method, url])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "Content-Type: application/json", "-d", body])
        .output()
        .expect("curl runs");
    serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn a_change_made_through_one_host_process_reaches_another_on_the_same_database() {
    let data = tempfile::tempdir().expect("tempdir");
    let (first, first_url) = serve(data.path());
    let _first = KillOnDrop(first);
    let (second, second_url) = serve(data.path());
    let _second = KillOnDrop(second);
    let data = data.path();
    let ops = create_token(data, "head_office", "ops");
    let output = lifecircle(data)
        .args(["token", "--customer", "c1", "--region", "dev"])
        .output()
        .expect("lifecircle runs");
    let customer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let greet = format!("{second_url}/v1/scenarios/hello/greet");
    // What the second host answers once it shows `expected`, polling for up to ten seconds
    // (hosts poll every 250 ms; the bound only stops a broken host from hanging the test).
    let eventually = |expected: &str| {
        let mut last = serde_json::Value::Null;
        for _ in 0..200 {
            last = curl_json("POST", &greet, &customer, "{}");
            let seen = last["message"].as_str().or(last["code"].as_str());
            if seen.is_some_and(|s| s.starts_with(expected)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        last
    };
    assert!(eventually("Hello")["message"].is_string());

    let settings = r#"{"greeting": "Hei"}"#;
    let enable = [
        "enable",
        "hello",
        "--region",
        "dev",
        "--version",
        "0.1.0",
        "--settings",
        settings,
    ];
    let (code, _, err) = admin(data, &first_url, &ops, &enable);
    assert_eq!(code, 0, "{err}");
    let answer = eventually("Hei");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Hei, ")),
        "{answer}"
    );

    let kill = ["kill", "hello", "--region", "dev", "--reason", "incident"];
    let (code, _, err) = admin(data, &first_url, &ops, &kill);
    assert_eq!(code, 0, "{err}");
    assert_eq!(eventually("plugin_killed")["code"], "plugin_killed");
}

/// `curl -s -X POST url` as `token` with an `Idempotency-Key` and a JSON body: the answer.
fn curl_keyed(url: &str, token: &str, key: &str, body: &str) -> serde_json::Value {
    let output = Command::new("curl")
        .args(["-s", "-X", "POST", url])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", &format!("Idempotency-Key: {key}")])
        .args(["-H", "Content-Type: application/json", "-d", body])
        .output()
        .expect("curl runs");
    serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn scheduled_jobs_survive_a_crash_and_run_once_across_two_host_processes() {
    let data = tempfile::tempdir().expect("tempdir");
    let (first, first_url) = serve(data.path());
    let data = data.path();
    let output = lifecircle(data)
        .args(["token", "--customer", "c1", "--region", "dev"])
        .output()
        .expect("lifecircle runs");
    let customer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let remind = format!("{first_url}/v1/scenarios/hello/remind");
    for n in 0..20 {
        let answer = curl_keyed(
            &remind,
            &customer,
            &format!("r{n}"),
            r#"{"after_seconds": 5}"#,
        );
        assert!(answer["job"].is_string(), "{answer}");
    }
    // The process that scheduled them dies before they are due.
    drop(KillOnDrop(first));

    let (second, second_url) = serve(data);
    let _second = KillOnDrop(second);
    let (third, _) = serve(data);
    let _third = KillOnDrop(third);
    let reminders = format!("{second_url}/v1/scenarios/hello/reminders");
    let mut reminded = serde_json::Value::Null;
    for _ in 0..300 {
        reminded = curl_json("POST", &reminders, &customer, "{}");
        if reminded["reminded"] == 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(reminded["reminded"], 20, "{reminded}");

    // Each job ran once: done at its first attempt, one invocation each.
    let ops = create_token(data, "head_office", "ops");
    let get = |path: &str| {
        let output = Command::new("curl")
            .args(["-s", &format!("{second_url}{path}")])
            .args(["-H", &format!("Authorization: Bearer {ops}")])
            .output()
            .expect("curl runs");
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap_or_default()
    };
    let done = get("/admin/v1/jobs?plugin=hello&status=done&limit=100");
    let jobs = done["jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(jobs.len(), 20, "{done}");
    assert!(jobs.iter().all(|job| job["attempts"] == 1), "{done}");
    let records = get("/admin/v1/invocations?plugin=hello&limit=200");
    let runs = records["invocations"]
        .as_array()
        .map(|all| all.iter().filter(|r| r["action"] == "job:remind").count());
    assert_eq!(runs, Some(20), "{records}");
}
