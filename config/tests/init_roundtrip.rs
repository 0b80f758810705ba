//! `init` writes federations that load back, with keys that match.

use federact_config::{
    write_local_federation, ChainKind, Federation, InitError, NodeConfig, Role, Topology,
};

#[test]
fn default_topology_is_basics_table_one_and_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology::default();
    let written = write_local_federation(dir.path(), &topo, false).unwrap();
    let fed = Federation::load(&written.federation_file).unwrap();
    assert_eq!(fed.clouds().len(), 4);
    assert_eq!(fed.nodes().len(), topo.node_count());
    assert_eq!(fed.chains().len(), 5);
    let consortium = fed.consortium().unwrap();
    assert_eq!(consortium.validators().len(), 12);
    assert_eq!(consortium.fault_tolerance(), 3);
    for cloud in fed.clouds() {
        let local = fed.local_chain(cloud.name()).unwrap();
        assert_eq!(local.kind(), ChainKind::Local);
        assert_eq!(local.validators().len(), 4);
        assert_eq!(fed.nodes_with_role(cloud.name(), Role::Server).count(), 2);
        // Inter validators are spread evenly: 3 per cloud.
        let inter = consortium
            .validator_names()
            .iter()
            .filter(|n| fed.node(n).unwrap().cloud() == cloud.name())
            .count();
        assert_eq!(inter, 3);
    }
    // Every node's own config loads, and its key file matches its public key.
    for (name, file) in &written.node_files {
        let node = NodeConfig::load(file).unwrap();
        assert_eq!(node.spec().name(), name);
        assert_eq!(node.load_key().unwrap().id(), node.spec().id());
        assert!(node.data_dir().ends_with(format!("data/{name}")));
    }
}

#[test]
fn one_cloud_with_one_validator_needs_no_consortium() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: 1,
        local_validators: 1,
        inter_validators: 0,
    };
    let written = write_local_federation(dir.path(), &topo, false).unwrap();
    let fed = Federation::load(&written.federation_file).unwrap();
    assert!(fed.consortium().is_none());
    let chain = fed.local_chain("cloud-1").unwrap();
    assert_eq!(
        (
            chain.validators().len(),
            chain.fault_tolerance(),
            chain.quorum()
        ),
        (1, 0, 1)
    );
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 2,
        servers_per_cloud: 1,
        local_validators: 1,
        inter_validators: 1,
    };
    let first = write_local_federation(dir.path(), &topo, false).unwrap();
    let before = std::fs::read_to_string(&first.federation_file).unwrap();
    assert!(matches!(
        write_local_federation(dir.path(), &topo, false),
        Err(InitError::Exists(_))
    ));
    assert_eq!(
        std::fs::read_to_string(&first.federation_file).unwrap(),
        before
    );
    let again = write_local_federation(dir.path(), &topo, true).unwrap();
    let fed = Federation::load(&again.federation_file).unwrap();
    for (_, file) in &again.node_files {
        let node = NodeConfig::load(file).unwrap();
        node.load_key().unwrap();
    }
    assert_eq!(fed.nodes().len(), topo.node_count());
}

#[test]
fn impossible_topologies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for topo in [
        Topology {
            clouds: 0,
            ..Topology::default()
        },
        Topology {
            local_validators: 0,
            ..Topology::default()
        },
        Topology {
            inter_validators: 0,
            ..Topology::default()
        },
    ] {
        assert!(matches!(
            write_local_federation(dir.path(), &topo, false),
            Err(InitError::Topology(_))
        ));
    }
}

#[test]
fn node_key_that_does_not_match_the_federation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: 1,
        local_validators: 1,
        inter_validators: 0,
    };
    let written = write_local_federation(dir.path(), &topo, false).unwrap();
    let (_, file) = &written.node_files[0];
    let node = NodeConfig::load(file).unwrap();
    federact_config::NodeKey::generate()
        .write_file(node.key_file(), true)
        .unwrap();
    let e = node.load_key().unwrap_err();
    assert!(e.to_string().contains("but the federation declares"), "{e}");
}

#[test]
fn node_file_bind_overrides_the_listen_address_and_defaults_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: 1,
        local_validators: 1,
        inter_validators: 0,
    };
    let written = write_local_federation(dir.path(), &topo, false).unwrap();
    let (_, file) = &written.node_files[0];
    let node = NodeConfig::load(file).unwrap();
    assert_eq!(node.bind_addr(), node.spec().listen());
    let text = std::fs::read_to_string(file).unwrap();
    std::fs::write(file, format!("{text}\nbind = \"127.0.0.1:1\"\n")).unwrap();
    let node = NodeConfig::load(file).unwrap();
    assert_eq!(node.bind_addr(), "127.0.0.1:1".parse().unwrap());
    assert_ne!(node.bind_addr(), node.spec().listen());
}

#[test]
fn node_file_bad_bind_address_is_refused_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: 1,
        local_validators: 1,
        inter_validators: 0,
    };
    let written = write_local_federation(dir.path(), &topo, false).unwrap();
    let (_, file) = &written.node_files[0];
    let text = std::fs::read_to_string(file).unwrap();
    let lines = text.lines().count();
    std::fs::write(file, format!("{text}\nbind = \"nowhere:x\"\n")).unwrap();
    let e = NodeConfig::load(file).unwrap_err();
    assert!(
        e.to_string()
            .contains("`nowhere:x` is not a socket address"),
        "{e}"
    );
    assert_eq!(e.location.unwrap().line, lines + 2, "{e}");
}

#[test]
fn chain_params_given_to_init_are_what_every_chain_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 2,
        servers_per_cloud: 1,
        local_validators: 1,
        inter_validators: 1,
    };
    let params = federact_config::ChainParams {
        block_size_txs: 4,
        block_bytes_max: 1 << 20,
        batch_timeout_ms: 5,
        ..federact_config::default_chain_params()
    };
    let written =
        federact_config::write_local_federation_with(dir.path(), &topo, &params, false).unwrap();
    let fed = Federation::load(&written.federation_file).unwrap();
    assert_eq!(fed.chains().len(), 3);
    for chain in fed.chains() {
        assert_eq!(*chain.params(), params, "{}", chain.id());
    }
    // The plain writer gives init's defaults.
    let dir = tempfile::tempdir().unwrap();
    let written = write_local_federation(dir.path(), &topo, false).unwrap();
    let fed = Federation::load(&written.federation_file).unwrap();
    for chain in fed.chains() {
        assert_eq!(*chain.params(), federact_config::default_chain_params());
    }
}
