//! Bundles that must not load: the host refuses to start and says which bundle and why.

use lifecircle_tests::{Bundle, test_config};

async fn start_error(bundles: &[Bundle]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(dir.path(), bundles);
    match lifecircle::build(config).await {
        Ok(_) => panic!("the host started with a bad bundle"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_importing_an_undeclared_capability_fails_to_load_naming_it() {
    let error = start_error(&[Bundle::new("hostile/hostile-undeclared")]).await;
    assert!(error.contains("hostile-undeclared"), "{error}");
    assert!(error.contains("lifecircle:scenario/store@0.1.0"), "{error}");
    assert!(error.contains("add \"store\""), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_asking_for_more_than_the_host_allows_fails_naming_the_limit() {
    let greedy = Bundle::new("reference/hello")
        .renamed("greedy")
        .with_manifest_tail("[limits]\ndeadline_ms = 999999999\n");
    let error = start_error(&[greedy]).await;
    assert!(error.contains("limits.deadline_ms"), "{error}");
    assert!(error.contains("plugin_limits"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_with_an_unknown_key_fails_naming_the_key() {
    let typo = Bundle::new("reference/hello")
        .renamed("typo")
        .with_manifest_tail("[limit]\nfuel_max = 5\n");
    let error = start_error(&[typo]).await;
    assert!(error.contains("typo"), "{error}");
    assert!(error.contains("limit"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_component_fails_to_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(dir.path(), &[Bundle::new("reference/hello")]);
    std::fs::write(
        config.plugins_dir.join("hello/plugin.wasm"),
        b"\0asm not really",
    )
    .expect("write");
    let error = match lifecircle::build(config).await {
        Ok(_) => panic!("the host started with a broken component"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("not a valid WebAssembly component"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_plugins_directory_says_how_to_build_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path(), &[]);
    config.plugins_dir = dir.path().join("missing");
    let error = match lifecircle::build(config).await {
        Ok(_) => panic!("started without plugins"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("make plugins"), "{error}");
}
