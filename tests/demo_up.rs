//! What a newcomer runs first: `federact demo` (the whole federation in one
//! process) and `federact init` + `federact up` (one process per node),
//! driven with the CLI as a user would, with a validator killed on the way.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn federact() -> Command {
    Command::new(env!("CARGO_BIN_EXE_federact"))
}

fn run(args: &[&str], dir_args: &[&Path]) -> Output {
    let mut c = federact();
    c.args(args);
    for d in dir_args {
        c.arg(d);
    }
    c.output().expect("run federact")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every validator store of a federation directory.
fn stores(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for node in std::fs::read_dir(dir.join("data")).unwrap().flatten() {
        let chains = node.path().join("chains");
        if let Ok(entries) = std::fs::read_dir(&chains) {
            for chain in entries.flatten() {
                out.push(chain.path().join("chain"));
            }
        }
    }
    out.sort();
    out
}

fn verify_all(dir: &Path) -> usize {
    let all = stores(dir);
    for s in &all {
        let out = run(
            &["ledger", "verify", "--config"],
            &[&dir.join("federation.toml"), s],
        );
        assert!(out.status.success(), "{}: {}", s.display(), text(&out));
    }
    all.len()
}

#[test]
fn demo_runs_every_phase_and_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("fed");
    let out = run(&["demo", "--image-mib", "2", "--keep"], &[&keep]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for phase in [
        "invoke counters",
        "offload tasks inside a cloud",
        "offload tasks across clouds",
        "(inside)",
        "(across clouds)",
        "tampered image",
        "keeps committing",
        "catches up",
    ] {
        assert!(stdout.contains(phase), "phase `{phase}` missing:\n{all}");
    }
    assert!(stdout.contains("demo passed"), "{all}");
    assert!(!stdout.contains("FAIL"), "{all}");
    for chain in [
        "cloud-1.local",
        "cloud-2.local",
        "cloud-3.local",
        "consortium",
    ] {
        assert!(
            stdout.contains(chain),
            "{chain} missing from the summary:\n{all}"
        );
    }
    // The kept stores verify with the offline tool too.
    assert_eq!(verify_all(&keep), 16);
}

#[test]
fn demo_with_one_process_per_node_passes_every_check() {
    let out = run(&["demo", "--processes", "--image-mib", "2"], &[]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("as separate processes"), "{all}");
    assert!(stdout.contains("demo passed"), "{all}");
    assert!(!stdout.contains("FAIL"), "{all}");
}

/// Kills the `up` process group's children on drop, so a failing test
/// leaves no node processes behind.
struct Up {
    child: Child,
    pids: Vec<(String, i32)>,
}

impl Drop for Up {
    fn drop(&mut self) {
        for (_, pid) in &self.pids {
            // SAFETY: kill(2) on pids the `up` process spawned.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn height(status: &str, cloud: &str, chain: &str) -> u64 {
    status
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[0] == cloud && f[1] == chain).then(|| f[2].parse().ok())?
        })
        .unwrap_or_else(|| panic!("no height of {chain} from {cloud} in:\n{status}"))
}

#[test]
fn up_keeps_committing_with_a_validator_killed_and_every_store_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run(
        &[
            "init",
            "--clouds",
            "2",
            "--servers-per-cloud",
            "1",
            "--inter-validators",
            "4",
            "--dir",
        ],
        &[d],
    );
    assert!(out.status.success(), "{}", text(&out));

    let mut child = federact()
        .arg("up")
        .arg(d)
        .args(["--log", "warn", "--ready-timeout-s", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut up = Up {
        child,
        pids: Vec::new(),
    };
    // The table of nodes (name, pid, ...), then "federation up: ...".
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("`federact up` reported the federation up in time");
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [name, pid, ..] = f.as_slice() {
            if let Ok(pid) = pid.parse::<i32>() {
                up.pids.push((name.to_string(), pid));
            }
        }
        if line.starts_with("federation up:") {
            break;
        }
    }
    assert_eq!(up.pids.len(), 18, "{:?}", up.pids);

    // Work through the CLI, as the cloud's client identity.
    let client = d.join("nodes/c1-client.toml");
    for expected in ["3", "6"] {
        let out = federact()
            .args(["invoke", "--config"])
            .arg(&client)
            .args(["counter", "acct", "3"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
    }
    let status = run(&["status", "--counters"], &[d]);
    assert!(status.status.success(), "{}", text(&status));
    // Every node's counters answer (one line each under the header).
    let s = String::from_utf8_lossy(&status.stdout).to_string();
    let table = s.split("TX-REFUSED").nth(1).unwrap_or_default();
    assert!(
        table
            .lines()
            .filter(|l| l.starts_with("c1-validator-") || l.starts_with("c2-gateway"))
            .all(|l| l.split_whitespace().count() == 9),
        "{s}"
    );
    assert!(table.contains("c1-validator-3"), "{s}");
    let before = height(
        &String::from_utf8_lossy(&status.stdout),
        "cloud-1",
        "cloud-1.local",
    );

    // kill -9 one validator of cloud 1: its chain keeps committing.
    let victim = up
        .pids
        .iter()
        .find(|(n, _)| n == "c1-validator-3")
        .map(|(_, p)| *p)
        .unwrap();
    // SAFETY: kill(2) on a node process `up` started.
    unsafe {
        libc::kill(victim, libc::SIGKILL);
    }
    for i in 0..3 {
        let out = federact()
            .args(["invoke", "--config"])
            .arg(&client)
            .args(["counter", &format!("after-kill-{i}"), "1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let status = run(&["status", "--timeout-s", "2"], &[d]);
    let s = String::from_utf8_lossy(&status.stdout).to_string();
    let after = height(&s, "cloud-1", "cloud-1.local");
    assert!(
        after > before,
        "cloud-1.local stalled at {before} → {after}:\n{s}"
    );
    assert!(
        s.lines()
            .any(|l| l.starts_with("c1-validator-3") && !l.ends_with(" up")),
        "{s}"
    );
    assert!(s.contains("17 of 18 nodes up"), "{s}");

    // Stop everything; every store (the killed validator's too) verifies.
    // SAFETY: SIGTERM to the `up` process we spawned.
    unsafe {
        libc::kill(up.child.id() as i32, libc::SIGTERM);
    }
    let t = Instant::now();
    let code = loop {
        if let Some(code) = up.child.try_wait().unwrap() {
            break code;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "`up` did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "up exited with {code}");
    up.pids.clear();
    // 2 local chains × 4 validators + 4 inter validators.
    assert_eq!(verify_all(d), 12);
}
