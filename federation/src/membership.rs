//! Who may connect: the set of member nodes with their addresses.
//!
//! A [`Membership`] is an immutable value built from a loaded
//! [`Federation`] or from a plain list (tests); the transport holds the
//! current one and both TLS verifiers consult it on every handshake, so
//! [`crate::Transport::update_membership`] takes effect for the next
//! connection (and closes connections of removed members).

use std::collections::HashMap;
use std::net::SocketAddr;

use federact_config::{Federation, NodeId};

/// One member node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its identity (ed25519 public key).
    pub id: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name, for logs.
    pub name: String,
}

/// The federation's member nodes, keyed by id.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    members: HashMap<NodeId, Member>,
}

impl Membership {
    /// Builds a membership from members; a later duplicate id replaces an
    /// earlier one.
    pub fn new(members: impl IntoIterator<Item = Member>) -> Self {
        Membership {
            members: members.into_iter().map(|m| (m.id, m)).collect(),
        }
    }

    /// Every node of a loaded federation.
    pub fn from_federation(federation: &Federation) -> Self {
        Self::new(federation.nodes().iter().map(|n| Member {
            id: n.id(),
            addr: n.listen(),
            name: n.name().to_owned(),
        }))
    }

    /// The member with this id.
    pub fn get(&self, id: &NodeId) -> Option<&Member> {
        self.members.get(id)
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.members.contains_key(id)
    }

    /// All members, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True with no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The same membership with `id` moved to `addr` (or added, named
    /// `name`).
    pub fn with_member(mut self, id: NodeId, addr: SocketAddr, name: &str) -> Self {
        self.members.insert(
            id,
            Member {
                id,
                addr,
                name: name.to_owned(),
            },
        );
        self
    }
}
