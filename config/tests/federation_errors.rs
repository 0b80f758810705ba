//! Each way a federation file can be invalid yields its specific error,
//! pointing at the right line and column.

use std::path::Path;

use federact_config::{ConfigError, ConfigErrorKind, Federation, NodeKey};

fn key(i: u8) -> String {
    NodeKey::from_seed(&[i; 32]).id().to_string()
}

/// A valid two-cloud federation; tests replace pieces of it.
fn base() -> String {
    let mut s = String::from(
        "[federation]\nname = \"t\"\n\n[[clouds]]\nname = \"a\"\n\n[[clouds]]\nname = \"b\"\n\n",
    );
    let mut port = 7000;
    let mut k = 1u8;
    for cloud in ["a", "b"] {
        for (name, role) in [
            ("gw", "gateway"),
            ("orch", "orchestrator"),
            ("srv", "server"),
            ("v1", "validator"),
            ("v2", "validator"),
            ("v3", "validator"),
            ("v4", "validator"),
        ] {
            s += &format!(
                "[[nodes]]\nname = \"{cloud}-{name}\"\ncloud = \"{cloud}\"\nroles = [\"{role}\"]\nlisten = \"127.0.0.1:{port}\"\npublic_key = \"{}\"\n\n",
                key(k)
            );
            port += 1;
            k += 1;
        }
    }
    s += "[[chains]]\nid = \"a.local\"\nkind = \"local\"\ncloud = \"a\"\nvalidators = [\"a-v1\", \"a-v2\", \"a-v3\", \"a-v4\"]\n\n";
    s += "[[chains]]\nid = \"b.local\"\nkind = \"local\"\ncloud = \"b\"\nvalidators = [\"b-v1\", \"b-v2\", \"b-v3\", \"b-v4\"]\n\n";
    s += "[[chains]]\nid = \"consortium\"\nkind = \"consortium\"\nvalidators = [\"a-v1\", \"b-v1\", \"a-v2\", \"b-v2\"]\nfault_tolerance = 1\n";
    s
}

fn parse(text: &str) -> Result<Federation, ConfigError> {
    Federation::parse(text, Path::new("fed.toml"))
}

/// Parses `text`, expects an error, and checks it points at the first
/// occurrence of `at` (1-based line and column) with a message containing `says`.
fn expect_err(text: &str, at: &str, says: &str) -> ConfigError {
    let e = parse(text).expect_err("the federation should be refused");
    let offset = text
        .find(at)
        .unwrap_or_else(|| panic!("marker {at:?} not in text"));
    let want = federact_config::Location::of_offset(text, offset);
    let shown = e.to_string();
    assert_eq!(e.location, Some(want), "wrong location in: {shown}");
    assert!(
        shown.starts_with(&format!("fed.toml:{}:{}: ", want.line, want.column)),
        "{shown}"
    );
    assert!(shown.contains(says), "{shown:?} should contain {says:?}");
    e
}

#[test]
fn base_federation_is_valid() {
    let f = parse(&base()).unwrap();
    assert_eq!(f.clouds().len(), 2);
    assert_eq!(f.nodes().len(), 14);
    assert_eq!(f.consortium().unwrap().fault_tolerance(), 1);
    assert_eq!(f.local_chain("a").unwrap().quorum(), 3);
    assert_eq!(f.gateway("b").unwrap().name(), "b-gw");
    let id = f.node("a-srv").unwrap().id();
    assert_eq!(f.node_by_id(&id).unwrap().name(), "a-srv");
}

#[test]
fn syntax_error_has_line_and_column() {
    let text = base().replace("name = \"t\"", "name = \"t");
    let e = parse(&text).unwrap_err();
    assert!(matches!(*e.kind, ConfigErrorKind::Syntax(_)));
    assert_eq!(e.location.unwrap().line, 2, "{e}");
}

#[test]
fn wrong_type_points_at_the_value() {
    let text = base().replacen("listen = \"127.0.0.1:7000\"", "listen = 7000", 1);
    let e = expect_err(&text, "7000\n", "");
    assert!(matches!(*e.kind, ConfigErrorKind::Syntax(_)));
}

#[test]
fn unknown_field_is_refused() {
    let text = base().replacen("[[nodes]]\n", "[[nodes]]\nlisten_addr = \"x\"\n", 1);
    let e = expect_err(&text, "listen_addr", "listen_addr");
    assert!(matches!(*e.kind, ConfigErrorKind::Syntax(_)));
}

#[test]
fn duplicate_node_name() {
    let text = base().replacen("name = \"a-orch\"", "name = \"a-gw\"", 1);
    let marker = "\"a-gw\"\ncloud = \"a\"\nroles = [\"orchestrator\"]";
    let e = expect_err(&text, marker, "duplicate node name `a-gw`");
    assert!(
        matches!(
            *e.kind,
            ConfigErrorKind::DuplicateNodeName { first_line: 11, .. }
        ),
        "{e}"
    );
}

#[test]
fn duplicate_cloud_name() {
    let text = base().replacen("name = \"b\"", "name = \"a\"", 1);
    let e = expect_err(&text, "\"a\"\n\n[[nodes]]", "duplicate cloud name `a`");
    assert!(matches!(*e.kind, ConfigErrorKind::DuplicateCloud { .. }));
}

#[test]
fn duplicate_public_key() {
    let text = base().replacen(&key(2), &key(1), 1);
    let marker = format!("\"{}\"\n\n[[nodes]]\nname = \"a-srv\"", key(1));
    let e = expect_err(&text, &marker, "same public_key as node `a-gw`");
    assert!(matches!(*e.kind, ConfigErrorKind::DuplicateKey { .. }));
}

#[test]
fn unknown_cloud() {
    let text = base().replacen(
        "cloud = \"a\"\nroles = [\"server\"]",
        "cloud = \"zz\"\nroles = [\"server\"]",
        1,
    );
    let e = expect_err(&text, "\"zz\"", "unknown cloud `zz`");
    assert!(
        e.to_string().contains("a, b"),
        "lists the known clouds: {e}"
    );
}

#[test]
fn chain_with_no_validators() {
    let text = base().replace(
        "validators = [\"b-v1\", \"b-v2\", \"b-v3\", \"b-v4\"]",
        "validators = []",
    );
    let e = expect_err(&text, "[]", "chain `b.local` has no validators");
    assert!(matches!(*e.kind, ConfigErrorKind::NoValidators { .. }));
}

#[test]
fn node_with_role_but_no_key() {
    let text = base().replacen(&format!("public_key = \"{}\"\n", key(4)), "", 1);
    let e = expect_err(
        &text,
        "\"a-v1\"\ncloud",
        "node `a-v1` has role validator but no public_key",
    );
    assert!(
        e.to_string().contains("federact keygen"),
        "says what to do: {e}"
    );
}

#[test]
fn bad_public_key() {
    let text = base().replacen(&key(3), "not-a-key", 1);
    let e = expect_err(
        &text,
        "\"not-a-key\"",
        "public_key is not an ed25519 public key",
    );
    assert!(matches!(*e.kind, ConfigErrorKind::BadPublicKey { .. }));
}

#[test]
fn address_collision() {
    let text = base().replacen("127.0.0.1:7001", "127.0.0.1:7000", 1);
    let e = parse(&text).unwrap_err();
    // The first occurrence is node a-gw's own address; the collision is reported on the second.
    let second = text.match_indices("\"127.0.0.1:7000\"").nth(1).unwrap().0;
    assert_eq!(
        e.location,
        Some(federact_config::Location::of_offset(&text, second))
    );
    assert!(
        e.to_string()
            .contains("node `a-orch` listens on 127.0.0.1:7000, which node `a-gw` already uses"),
        "{e}"
    );
}

#[test]
fn unspecified_address_collides_with_any_ip_on_the_same_port() {
    let text = base().replacen("127.0.0.1:7001", "0.0.0.0:7000", 1);
    let e = expect_err(&text, "\"0.0.0.0:7000\"", "node `a-gw` already uses");
    assert!(matches!(*e.kind, ConfigErrorKind::AddressCollision { .. }));
}

#[test]
fn bad_address() {
    let text = base().replacen("127.0.0.1:7002", "localhost", 1);
    expect_err(&text, "\"localhost\"", "not a socket address");
}

#[test]
fn fewer_than_3f_plus_1_validators() {
    let text = base().replace("fault_tolerance = 1", "fault_tolerance = 2");
    let e = expect_err(
        &text,
        "2\n",
        "has 4 validators but fault_tolerance = 2 needs at least 7",
    );
    assert!(matches!(
        *e.kind,
        ConfigErrorKind::TooFewValidators {
            n: 4,
            f: 2,
            needed: 7,
            ..
        }
    ));
}

#[test]
fn validator_without_the_role() {
    let text = base().replace(
        "\"a-v1\", \"b-v1\", \"a-v2\", \"b-v2\"",
        "\"a-v1\", \"b-v1\", \"a-v2\", \"b-srv\"",
    );
    expect_err(&text, "\"b-srv\"]", "lacks the validator role");
}

#[test]
fn unknown_and_repeated_validators() {
    let text = base().replace(
        "\"a-v1\", \"b-v1\", \"a-v2\", \"b-v2\"",
        "\"a-v1\", \"nobody\"",
    );
    expect_err(&text, "\"nobody\"", "not a declared node");
    let text = base().replace(
        "\"a-v1\", \"b-v1\", \"a-v2\", \"b-v2\"",
        "\"a-v1\", \"b-v1\", \"a-v1\", \"b-v2\"",
    );
    let second = text.match_indices("\"a-v1\", \"b-v2\"").next().unwrap().0;
    let e = parse(&text).unwrap_err();
    assert_eq!(
        e.location,
        Some(federact_config::Location::of_offset(&text, second))
    );
    assert!(matches!(
        *e.kind,
        ConfigErrorKind::DuplicateValidator { .. }
    ));
}

#[test]
fn local_chain_with_foreign_validator() {
    let text = base().replace(
        "[\"a-v1\", \"a-v2\", \"a-v3\", \"a-v4\"]",
        "[\"a-v1\", \"a-v2\", \"a-v3\", \"b-v4\"]",
    );
    expect_err(
        &text,
        "\"b-v4\"]\n\n[[chains]]\nid = \"b.local\"",
        "of cloud `b`",
    );
}

#[test]
fn cloud_without_local_chain_or_gateway() {
    let text = base().replace(
        "cloud = \"b\"\nvalidators = [\"b-v1\", \"b-v2\", \"b-v3\", \"b-v4\"]",
        "cloud = \"a\"\nvalidators = [\"a-v1\", \"a-v2\", \"a-v3\", \"a-v4\"]",
    );
    expect_err(&text, "\"a\"\n\n[[clouds]]", "cloud `a` has 2 local chains");
    let text = base().replacen("roles = [\"gateway\"]", "roles = [\"server\"]", 1);
    expect_err(
        &text,
        "\"a\"\n\n[[clouds]]",
        "has 0 nodes with role gateway",
    );
}

#[test]
fn several_clouds_need_a_consortium() {
    let cut = base().find("[[chains]]\nid = \"consortium\"").unwrap();
    let mut text = base()[..cut].to_string();
    // The inter validators now validate nothing; make them plain servers... except
    // they are local validators too, so the only error is the missing consortium.
    text.push('\n');
    let e = parse(&text).unwrap_err();
    assert!(matches!(*e.kind, ConfigErrorKind::Consortium(_)), "{e}");
    assert!(e.location.is_some());
}

#[test]
fn validator_in_no_chain() {
    let text = base().replacen(
        "roles = [\"server\"]",
        "roles = [\"server\", \"validator\"]",
        1,
    );
    expect_err(&text, "[\"server\", \"validator\"]", "no chain lists it");
}

#[test]
fn out_of_range_settings() {
    let text = base() + "\n[telemetry]\nsampling_ratio = 1.5\n";
    expect_err(&text, "[telemetry]", "telemetry.sampling_ratio = 1.5");
    let text = base().replace(
        "fault_tolerance = 1",
        "fault_tolerance = 1\nblock_size_txs = 0",
    );
    expect_err(&text, "0\n", "block_size_txs = 0 is out of range");
}

#[test]
fn missing_file_names_the_file() {
    let e = Federation::load(Path::new("/nonexistent/fed.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/fed.toml: cannot read file"),
        "{e}"
    );
}
