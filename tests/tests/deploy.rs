//! Every file in `deploy/` is checked against the binaries it configures.

use dibop_e2e::harness::bin;

fn deploy(file: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(file),
    )
    .unwrap()
}

#[test]
fn example_agent_config_passes_check_config() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.example.toml");
    let out = std::process::Command::new(bin("dibop-agent"))
        .args(["run", "--check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("dms.dealer.lan:8443"), "{text}");
}

#[test]
fn bad_agent_config_is_refused_with_every_problem_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[policy]\nallow = ['10.0.0.0/99', 'ok.lan']\n[limits]\nmax_response_bytes = 0\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin("dibop-agent"))
        .args(["run", "--check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 problem(s)") && err.contains("/99") && err.contains("max_response_bytes"),
        "{err}"
    );
}

/// The flags in each unit's `ExecStart` exist in the binary's `--help`.
#[test]
fn systemd_units_use_real_flags() {
    for (file, binary, subcommand) in [
        ("dibop-agent.service", "dibop-agent", "run"),
        ("dibop.service", "dibop", "serve"),
    ] {
        let unit = deploy(file);
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        assert!(
            exec.contains(&format!("{binary} {subcommand}")),
            "{file}: {exec}"
        );
        let help = std::process::Command::new(bin(binary))
            .args([subcommand, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in exec.split_whitespace().filter(|w| w.starts_with("--")) {
            assert!(
                help.contains(flag),
                "{file}: `{flag}` is not a flag of `{binary} {subcommand}`"
            );
        }
    }
}

#[test]
fn example_control_plane_config_passes_check_config_and_bad_ones_are_explained() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dibop.example.toml");
    let out = std::process::Command::new(bin("dibop"))
        .args(["serve", "--check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("http_addr = 127.0.0.1:8080"));

    // A flag wins over the file.
    let out = std::process::Command::new(bin("dibop"))
        .args([
            "serve",
            "--check-config",
            "--http-addr",
            "0.0.0.0:9999",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("http_addr = 0.0.0.0:9999"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "http_addr = \"eighty\"\nagent_idle_timeout_ms = 1\n").unwrap();
    let out = std::process::Command::new(bin("dibop"))
        .args(["serve", "--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 problem(s)")
            && err.contains("eighty")
            && err.contains("agent_idle_timeout_ms"),
        "{err}"
    );
    std::fs::write(&bad, "listen = 1\n").unwrap();
    let out = std::process::Command::new(bin("dibop"))
        .args(["serve", "--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listen"),
        "unknown keys are named"
    );
}

#[test]
fn connector_definitions_validate_on_the_command_line() {
    let catalogue = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../catalogue");
    for entry in std::fs::read_dir(&catalogue).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            continue;
        }
        let out = std::process::Command::new(bin("dibop"))
            .args(["connector", "validate"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "format: dibop.connector/v1\nname: x\noperations:\n  - id: a\n    method: FETCH\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin("dibop"))
        .args(["connector", "validate"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for path in [
        "slug: is required",
        "operations[0].method",
        "operations[0].path: is required",
        "resilience: is required",
    ] {
        assert!(err.contains(path), "`{path}` missing from:\n{err}");
    }
}

#[test]
fn openapi_documents_import_on_the_command_line() {
    let examples = std::env::var("DIBOP_OAS_EXAMPLES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/test-deps/node_modules/@readme/oas-examples")
        });
    let petstore = examples.join("3.1/yaml/petstore.yaml");
    assert!(
        petstore.exists(),
        "{}: run scripts/test (it installs @readme/oas-examples) or set DIBOP_OAS_EXAMPLES",
        petstore.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("petstore.dibop.yaml");
    let out = std::process::Command::new(bin("dibop"))
        .args(["connector", "import-openapi"])
        .arg(&petstore)
        .args(["--slug", "petstore", "--category", "demo", "-o"])
        .arg(&out_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: "),
        "warnings go to stderr: {stderr}"
    );
    assert!(stderr.contains("operations"), "{stderr}");
    // What it wrote is a valid definition.
    let out = std::process::Command::new(bin("dibop"))
        .args(["connector", "validate"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&out_file).unwrap();
    assert!(text.contains("slug: petstore"), "{text}");
    assert!(text.contains("getPetById"), "{text}");

    // Not OpenAPI: a clear error, non-zero exit, nothing written.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "asyncapi: 2.6.0\nchannels: {}\n").unwrap();
    let target = dir.path().join("never.yaml");
    let out = std::process::Command::new(bin("dibop"))
        .args(["connector", "import-openapi"])
        .arg(&bad)
        .arg("-o")
        .arg(&target)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an OpenAPI document"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!target.exists());
}

#[test]
fn orchestration_definitions_validate_on_the_command_line() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../catalogue/orchestrations");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let out = std::process::Command::new(bin("dibop"))
            .args(["orchestration", "validate"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 1);
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "format: dibop.orchestration/v1\nname: x\nsteps:\n  - {id: a, type: transform, expression: \".steps.b | (\"}\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin("dibop"))
        .args(["orchestration", "validate"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("$.steps[0].expression: invalid expression"),
        "{err}"
    );
    assert!(
        err.contains("refers to step `b`, which does not exist"),
        "{err}"
    );
}

/// The README's import example works from a fresh clone: the document it
/// names ships in the repository.
#[test]
fn the_readme_import_example_runs_from_a_fresh_clone() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let example = "docs/examples/parts-catalog.openapi.yaml";
    assert!(readme.contains(example), "the README names {example}");
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("parts.dibop.yaml");
    let out = std::process::Command::new(bin("dibop"))
        .args(["connector", "import-openapi"])
        .arg(root.join(example))
        .arg("-o")
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(bin("dibop"))
        .args(["connector", "validate"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--check-config` says a configuration is valid only when its database
/// answers: an unreachable PostgreSQL fails the check, naming it (without
/// its password).
#[test]
fn check_config_fails_when_the_database_does_not_answer() {
    // A port with nothing listening on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("dibop"))
        .args(["serve", "--check-config", "--data-dir"])
        .arg(dir.path())
        .args([
            "--database-url",
            &format!("postgres://dibop:s3cret-canary@127.0.0.1:{port}/dibop"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(!stdout.contains("configuration is valid"), "{stdout}");
    assert!(stderr.contains("database"), "{stderr}");
    assert!(!stderr.contains("s3cret-canary"), "{stderr}");
}

/// The production binaries depend on no test code: the control plane takes
/// the DMS simulator from its own crate (optional, for `dibop dev`), never
/// from the end-to-end crate.
#[test]
fn production_crates_do_not_depend_on_the_test_crate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for manifest in [
        "control-plane/Cargo.toml",
        "relay-agent/Cargo.toml",
        "runtime/Cargo.toml",
        "dms-sim/Cargo.toml",
        "protocol/Cargo.toml",
    ] {
        let text = std::fs::read_to_string(root.join(manifest)).unwrap();
        let doc: toml::Table = toml::from_str(&text).unwrap();
        for section in ["dependencies", "build-dependencies"] {
            let deps = doc.get(section).and_then(|d| d.as_table());
            assert!(
                deps.is_none_or(|d| !d.contains_key("dibop-e2e")),
                "{manifest} [{section}] names dibop-e2e"
            );
        }
    }
    // The control plane shares the call runtime with the agent through
    // `dibop-runtime`; the agent crate itself only comes with `dibop dev`.
    let text = std::fs::read_to_string(root.join("control-plane/Cargo.toml")).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    let deps = doc["dependencies"].as_table().unwrap();
    assert!(deps.contains_key("dibop-runtime"));
    let agent = deps.get("dibop-relay-agent").and_then(|d| d.as_table());
    assert!(
        agent.is_some_and(|a| a.get("optional").and_then(|o| o.as_bool()) == Some(true)),
        "the control plane depends on the agent crate beyond `dibop dev`: {agent:?}"
    );
}
