//! Image migrations for the fault harness: real VM image files (a qcow2
//! written with `qemu-img`/`qemu-io` when they are installed, else raw
//! seeded bytes) moved between server processes by the `federact migrate`
//! CLI, and their checker ([`check_images`]):
//!
//! - the `Indication` names the image's sha256 as its vm id;
//! - accepted: the destination keeps the image under its vm id
//!   (`DATA/<server>/migration/images/<vm_id>`) and it hashes to the vm id;
//! - aborted (rejected, timed out, a side killed): nothing half-adopted —
//!   no kept image at the destination and no partial reception
//!   (`incoming/<migration_id>.part`) left behind;
//! - either way the source file is unchanged (an image file stays where the
//!   operator put it).
//!
//! That every `Indication` ends in exactly one outcome on the ledger, and
//! that the CLI's report agrees with it, is checked with the instance
//! migrations by [`super::apps::check_migrations`].

use std::path::{Path, PathBuf};
use std::process::Command;

use federact::actors::wire::MigrationReport;
use federact::ledger::hash::Hash;
use federact::ledger::record::Site;

use super::apps::Requested;
use super::rng::SplitMix;
use super::{federact, operator_config, Cluster};

/// An image file on a source server's disk.
#[derive(Debug, Clone)]
pub struct Image {
    /// Where it is.
    pub path: PathBuf,
    /// Its sha256: the vm id a migration of it announces.
    pub vm_id: Hash,
    /// Its size.
    pub bytes: u64,
}

/// sha256 of a file (read whole: images here are a few MiB).
pub fn sha256_file(path: &Path) -> Option<Hash> {
    std::fs::read(path).ok().map(|b| Hash::of(&b))
}

fn qemu_available() -> bool {
    ["qemu-img", "qemu-io"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Writes a `mib` MiB image at `path` whose content depends on `seed`: a
/// qcow2 (64 MiB virtual, `mib` MiB of it written with a seeded pattern)
/// when `qemu-img` and `qemu-io` are installed, else raw seeded bytes.
pub fn write_image(path: &Path, mib: u64, seed: u64) -> Image {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("image directory");
    }
    let qcow2 = qemu_available()
        && Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(path)
            .arg("64M")
            .status()
            .is_ok_and(|s| s.success())
        && (0..mib).all(|m| {
            // One pattern byte per MiB, from the seed.
            let pattern = (SplitMix(seed ^ m).next() % 255) + 1;
            Command::new("qemu-io")
                .args(["-f", "qcow2", "-c"])
                .arg(format!("write -q -P {pattern} {m}M 1M"))
                .arg(path)
                .status()
                .is_ok_and(|s| s.success())
        });
    if !qcow2 {
        let mut rng = SplitMix(seed);
        let bytes: Vec<u8> = (0..(mib << 20) / 8)
            .flat_map(|_| rng.next().to_le_bytes())
            .collect();
        std::fs::write(path, bytes).expect("write image");
    }
    let vm_id = sha256_file(path).expect("read image");
    let bytes = std::fs::metadata(path).expect("image metadata").len();
    Image {
        path: path.to_path_buf(),
        vm_id,
        bytes,
    }
}

/// One image migration the test asked for.
#[derive(Debug, Clone)]
pub struct ImageMove {
    /// What the test called it.
    pub label: String,
    /// The image moved.
    pub image: Image,
    /// Its source server.
    pub from: Site,
    /// Its destination server.
    pub to: Site,
    /// The report (`federact migrate`'s output, parsed), or why none.
    pub answer: Result<MigrationReport, String>,
}

impl ImageMove {
    /// The migration as a [`Requested`] for the ledger checker.
    pub fn requested(&self) -> Requested {
        Requested {
            key: format!("image {}", self.label),
            answer: self.answer.clone(),
        }
    }
}

/// Parses `federact migrate`'s first line: `migration ID of vm VM:
/// completed|aborted in N ms (B bytes)`, then `  reason: ...`.
fn parse_report(stdout: &str) -> Result<MigrationReport, String> {
    let mut lines = stdout.lines();
    let first = lines.next().ok_or("no output")?;
    let words: Vec<&str> = first.split_whitespace().collect();
    let (id, vm, outcome) = match words.as_slice() {
        ["migration", id, "of", "vm", vm, outcome, ..] => (*id, vm.trim_end_matches(':'), *outcome),
        _ => return Err(format!("unexpected output {first:?}")),
    };
    let reason = lines
        .find_map(|l| l.trim().strip_prefix("reason: "))
        .map(str::to_string);
    Ok(MigrationReport {
        migration_id: Hash::from_hex(id).ok_or_else(|| format!("bad migration id {id}"))?,
        vm_id: Hash::from_hex(vm).ok_or_else(|| format!("bad vm id {vm}"))?,
        completed: outcome == "completed",
        reason,
        bytes: 0,
        elapsed_ms: 0,
        records: Vec::new(),
    })
}

/// Runs `federact migrate` as the operator of client `client`'s cloud
/// (only a cloud's operators may order its servers to send files) to move
/// `image` from `from` to `to`; the task ends with the parsed report.
pub fn migrate_cli(
    cluster: &Cluster,
    client: usize,
    image: &Image,
    from: &Site,
    to: &Site,
) -> tokio::task::JoinHandle<Result<MigrationReport, String>> {
    let config = operator_config(cluster, client);
    let mut cmd = federact();
    cmd.arg("migrate")
        .arg("--config")
        .arg(config)
        .arg("--image")
        .arg(&image.path)
        .arg("--from")
        .arg(format!("{}/{}", from.cloud, from.server))
        .arg("--to")
        .arg(format!("{}/{}", to.cloud, to.server))
        .args(["--timeout-s", "180"])
        .env("RUST_LOG", "warn");
    tokio::task::spawn_blocking(move || {
        let out = cmd
            .output()
            .map_err(|e| format!("running federact migrate: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "federact migrate exited with {}: {}{}",
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        parse_report(&stdout)
    })
}

/// The migration directory of server `name` (`DATA/<name>/migration`).
pub fn migration_dir(cluster: &Cluster, name: &str) -> PathBuf {
    cluster.dir.path().join("data").join(name).join("migration")
}

/// Checks each image move on disk (see the module doc), after the servers
/// stopped. `outcomes` are the ledger's (migration id → accepted).
pub fn check_images(
    cluster: &Cluster,
    moves: &[ImageMove],
    outcomes: &std::collections::HashMap<Hash, bool>,
) -> Vec<String> {
    let mut v = Vec::new();
    for m in moves {
        let what = format!(
            "image {} ({}/{} -> {}/{})",
            m.label, m.from.cloud, m.from.server, m.to.cloud, m.to.server
        );
        if sha256_file(&m.image.path) != Some(m.image.vm_id) {
            v.push(format!("{what}: the source file changed or vanished"));
        }
        let Ok(report) = &m.answer else {
            continue;
        };
        if report.vm_id != m.image.vm_id {
            v.push(format!(
                "{what}: announced vm id {} is not the image's sha256 {}",
                report.vm_id, m.image.vm_id
            ));
        }
        let dir = migration_dir(cluster, &m.to.server);
        let kept = dir.join("images").join(m.image.vm_id.to_string());
        let part = dir
            .join("incoming")
            .join(format!("{}.part", report.migration_id));
        let accepted = outcomes.get(&report.migration_id).copied().unwrap_or(false);
        if accepted {
            if sha256_file(&kept) != Some(m.image.vm_id) {
                v.push(format!(
                    "{what}: accepted, but {} does not hash to the vm id",
                    kept.display()
                ));
            }
        } else if kept.exists() {
            v.push(format!(
                "{what}: not accepted, yet the destination kept {} (half-adopted)",
                kept.display()
            ));
        }
        if part.exists() {
            v.push(format!(
                "{what}: a partial reception {} was left behind",
                part.display()
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_report_parses() {
        let id = Hash::of(b"m");
        let vm = Hash::of(b"vm");
        let out = format!(
            "migration {id} of vm {vm}: aborted in 12 ms (5 bytes)\n  reason: timed out after 6000 ms\n  Indication on cons at height 3\n"
        );
        let r = parse_report(&out).expect("parses");
        assert_eq!((r.migration_id, r.vm_id, r.completed), (id, vm, false));
        assert_eq!(r.reason.as_deref(), Some("timed out after 6000 ms"));
        assert!(parse_report("nonsense").is_err());
    }
}
