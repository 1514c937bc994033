//! The OpenAPI document against the server it describes: schemathesis (a
//! property-based API fuzzer from PyPI, installed by `scripts/test`) runs
//! every check (server errors, status codes, content types, response
//! schemas, schema-valid requests accepted, schema-violating ones refused,
//! authentication, stateful sequences) against a real `dibop serve` with an
//! enterprise admin's token. Clients generated from the document rely on
//! all of it. `tests/schemathesis/schemathesis.toml` says where the
//! document cannot state a rule (definitions checked as documents).

use std::path::PathBuf;

use dibop_e2e::harness::ControlPlane;

#[tokio::test]
async fn the_api_fuzzer_finds_nothing_against_the_document() {
    let deps = std::env::var("DIBOP_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-deps"));
    let st = deps.join("st");
    assert!(
        st.join("schemathesis").exists(),
        "{} has no schemathesis: run scripts/test (it installs schemathesis with pip) or set DIBOP_TEST_DEPS",
        st.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp")).await.unwrap();
    let api = cp.tenant("fuzzed-motors").await.unwrap();
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemathesis/schemathesis.toml");
    let out = tokio::process::Command::new("python3")
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(&config)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", cp.http))
        .args(["--url", &cp.http])
        .args(["-H", &format!("Authorization: Bearer {}", api.token())])
        // One worker: the fuzzer's generator is not reliably thread-safe (a Python `ast`
        // recursion-depth error was seen once with two).
        .args(["--checks", "all", "--max-examples", "20", "--workers", "1"])
        // A fixed seed: the same requests on every run (change it to explore).
        .args(["--seed", "20261201", "--no-color"])
        // Signing out would revoke the fuzzer's own token.
        .args(["--exclude-path", "/api/v1/auth/logout"])
        // Its cache and reports go to the temporary directory, not the repository.
        .current_dir(dir.path())
        .env("PYTHONPATH", &st)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .await
        .expect("python3 runs schemathesis");
    let text = String::from_utf8_lossy(&out.stdout);
    let tail: String = text
        .lines()
        .rev()
        .take(200)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("{tail}");
    assert!(
        out.status.success(),
        "schemathesis found problems (exit {:?}):\n{text}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(" passed"),
        "schemathesis ran no test cases:\n{text}"
    );
}
