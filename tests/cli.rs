//! The `federact` binary: keygen, init and config check as a newcomer runs them.

use std::process::Command;

fn federact() -> Command {
    Command::new(env!("CARGO_BIN_EXE_federact"))
}

#[test]
fn init_then_config_check_round_trips_the_default_topology() {
    let dir = tempfile::tempdir().unwrap();
    let out = federact()
        .args(["init", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fed = dir.path().join("federation.toml");
    let out = federact()
        .args(["config", "check"])
        .arg(&fed)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("4 clouds, 48 nodes, 5 chains"), "{stdout}");
    assert!(stdout.contains("consortium"), "{stdout}");
    // Running init again without --force refuses and keeps the files.
    let out = federact()
        .args(["init", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
}

#[test]
fn init_one_cloud_one_validator() {
    let dir = tempfile::tempdir().unwrap();
    let out = federact()
        .args([
            "init",
            "--clouds",
            "1",
            "--local-validators",
            "1",
            "--inter-validators",
            "0",
            "--servers-per-cloud",
            "1",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = federact()
        .args(["config", "check"])
        .arg(dir.path().join("federation.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 cloud, 5 nodes, 1 chain"));
}

#[test]
fn broken_file_reports_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("federation.toml");
    std::fs::write(
        &file,
        "[[clouds]]\nname = \"a\"\n\n[[nodes]]\nname = \"n\"\ncloud = \"b\"\n",
    )
    .unwrap();
    let out = federact()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:", file.display())), "{err}");
    // `roles` and `listen` are missing: the parser names the table at line 4.
    assert!(
        err.contains("federation.toml:4:1:") || err.contains("federation.toml:6:"),
        "{err}"
    );
}

#[test]
fn keygen_writes_a_private_file_and_prints_only_the_public_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.key");
    let out = federact()
        .args(["keygen", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let key = federact::config::NodeKey::read_file(&path).unwrap();
    assert_eq!(key.id().to_string(), id);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("PRIVATE KEY"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let again = federact()
        .args(["keygen", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!again.status.success(), "refuses to overwrite a key");
}
