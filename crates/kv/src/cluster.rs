//! The member table: etcd's view of the cluster (ids, names, peer URLs,
//! learners), replicated with the keys and kept in snapshots.
//!
//! Who votes is decided by the protocol core; this table carries what
//! etcd's Cluster API shows beside it. A change is computed once, by the
//! leader, from the table as applied ([`MemberChange::apply_to`]), and
//! replicated as the whole table after it ([`SetMembersRequest`]): every
//! replica then holds the very table the leader computed, and the core's
//! configuration is derived from that same table.

use crate::codec::{Dec, DecodeError, Enc, Sink, Wire, dec_vec, enc_vec};
use crate::types::ResponseHeader;

/// One member, as etcd's `Member` message shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClusterMember {
    /// Its id: random and never reused, so that a wiped member that comes
    /// back under a new id can never be mistaken for the old one.
    pub id: u64,
    /// Its name; empty until the member started (etcd's "unstarted").
    pub name: String,
    /// Where its peers reach it.
    pub peer_urls: Vec<String>,
    /// Where clients reach it, as it published them.
    pub client_urls: Vec<String>,
    /// A learner receives the log and votes in nothing.
    pub is_learner: bool,
}

/// Replaces the member table: a configuration change's state machine side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetMembersRequest {
    /// The whole table after the change, in id order.
    pub members: Vec<ClusterMember>,
}

/// The answer to a [`SetMembersRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetMembersResponse {
    /// Header; the revision is unchanged (membership is no key).
    pub header: ResponseHeader,
    /// The table after the change.
    pub members: Vec<ClusterMember>,
}

/// What etcd's Cluster API asks to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// `MemberAdd`: a new member, unstarted, with a fresh id.
    Add {
        /// The id chosen for it.
        id: u64,
        /// Where its peers will reach it.
        peer_urls: Vec<String>,
        /// Whether it joins as a learner.
        is_learner: bool,
    },
    /// `MemberRemove`.
    Remove {
        /// The member.
        id: u64,
    },
    /// `MemberUpdate`: new peer URLs.
    Update {
        /// The member.
        id: u64,
        /// Its new peer URLs.
        peer_urls: Vec<String>,
    },
    /// `MemberPromote`: a learner becomes a voter.
    Promote {
        /// The learner.
        id: u64,
    },
    /// Several voters out and in at once, in one change (no etcd call
    /// does this; the protocol allows any new configuration, and the
    /// simulator replaces a wiped member and grows 3 to 5 this way).
    Replace {
        /// The members removed.
        remove: Vec<u64>,
        /// The voters added: id and peer URLs.
        add: Vec<(u64, Vec<String>)>,
    },
}

/// Why a member change is refused, with etcd's texts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// No member has that id.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// Another member already has one of those peer URLs.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    /// A member with that id exists (or existed: ids are never reused).
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    /// Only a learner can be promoted.
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    /// A promotion waits until the learner has caught up.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// More learners than `--max-learners` allows.
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// The change would leave fewer started voters than a quorum of the
    /// new configuration (`--strict-reconfig-check`).
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// Another change is still in flight.
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    /// The change would leave no voter.
    #[error("etcdserver: re-configuration failed: no voting member would remain")]
    NoVoterLeft,
}

impl MemberChange {
    /// The member it concerns.
    pub fn id(&self) -> u64 {
        match self {
            MemberChange::Add { id, .. }
            | MemberChange::Remove { id }
            | MemberChange::Update { id, .. }
            | MemberChange::Promote { id } => *id,
            MemberChange::Replace { remove, add } => add
                .first()
                .map(|(id, _)| *id)
                .or_else(|| remove.first().copied())
                .unwrap_or(0),
        }
    }

    /// The table after this change, or why it is refused. `max_learners`
    /// bounds the learners (etcd's `--max-learners`).
    pub fn apply_to(
        &self,
        members: &[ClusterMember],
        max_learners: usize,
    ) -> Result<Vec<ClusterMember>, ClusterError> {
        let mut table = members.to_vec();
        let find = |table: &[ClusterMember], id: u64| table.iter().position(|m| m.id == id);
        let url_taken = |table: &[ClusterMember], urls: &[String], except: u64| {
            table
                .iter()
                .filter(|m| m.id != except)
                .any(|m| m.peer_urls.iter().any(|u| urls.contains(u)))
        };
        match self {
            MemberChange::Add {
                id,
                peer_urls,
                is_learner,
            } => {
                if find(&table, *id).is_some() {
                    return Err(ClusterError::MemberExists);
                }
                if url_taken(&table, peer_urls, *id) {
                    return Err(ClusterError::PeerUrlExists);
                }
                let learners = table.iter().filter(|m| m.is_learner).count();
                if *is_learner && learners >= max_learners {
                    return Err(ClusterError::TooManyLearners);
                }
                table.push(ClusterMember {
                    id: *id,
                    name: String::new(),
                    peer_urls: peer_urls.clone(),
                    client_urls: Vec::new(),
                    is_learner: *is_learner,
                });
                table.sort_by_key(|m| m.id);
            }
            MemberChange::Remove { id } => {
                let at = find(&table, *id).ok_or(ClusterError::MemberNotFound)?;
                table.remove(at);
                if !table.iter().any(|m| !m.is_learner) {
                    return Err(ClusterError::NoVoterLeft);
                }
            }
            MemberChange::Update { id, peer_urls } => {
                let at = find(&table, *id).ok_or(ClusterError::MemberNotFound)?;
                if url_taken(&table, peer_urls, *id) {
                    return Err(ClusterError::PeerUrlExists);
                }
                table[at].peer_urls = peer_urls.clone();
            }
            MemberChange::Promote { id } => {
                let at = find(&table, *id).ok_or(ClusterError::MemberNotFound)?;
                if !table[at].is_learner {
                    return Err(ClusterError::NotLearner);
                }
                table[at].is_learner = false;
            }
            MemberChange::Replace { remove, add } => {
                for id in remove {
                    let at = find(&table, *id).ok_or(ClusterError::MemberNotFound)?;
                    table.remove(at);
                }
                for (id, peer_urls) in add {
                    if find(&table, *id).is_some() {
                        return Err(ClusterError::MemberExists);
                    }
                    if url_taken(&table, peer_urls, *id) {
                        return Err(ClusterError::PeerUrlExists);
                    }
                    table.push(ClusterMember {
                        id: *id,
                        name: String::new(),
                        peer_urls: peer_urls.clone(),
                        client_urls: Vec::new(),
                        is_learner: false,
                    });
                }
                table.sort_by_key(|m| m.id);
                if !table.iter().any(|m| !m.is_learner) {
                    return Err(ClusterError::NoVoterLeft);
                }
            }
        }
        Ok(table)
    }
}

impl Wire for ClusterMember {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        e.u64(self.id);
        e.bytes(self.name.as_bytes());
        for urls in [&self.peer_urls, &self.client_urls] {
            e.len(urls.len());
            for url in urls {
                e.bytes(url.as_bytes());
            }
        }
        e.bool(self.is_learner);
    }

    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let id = d.u64()?;
        let name = d.string()?;
        let mut urls = [Vec::new(), Vec::new()];
        for list in &mut urls {
            for _ in 0..d.count(1)? {
                list.push(d.string()?);
            }
        }
        let [peer_urls, client_urls] = urls;
        Ok(ClusterMember {
            id,
            name,
            peer_urls,
            client_urls,
            is_learner: d.bool()?,
        })
    }
}

impl Wire for SetMembersRequest {
    fn encode<S: Sink + ?Sized>(&self, e: &mut Enc<'_, S>) {
        enc_vec(e, &self.members);
    }

    fn decode(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        Ok(SetMembersRequest {
            members: dec_vec(d)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, url: &str, is_learner: bool) -> ClusterMember {
        ClusterMember {
            id,
            name: format!("m{id}"),
            peer_urls: vec![url.into()],
            client_urls: Vec::new(),
            is_learner,
        }
    }

    #[test]
    fn changes_are_checked_as_etcd_checks_them() {
        let table = vec![member(1, "http://a", false), member(2, "http://b", false)];
        let add = |id, url: &str, is_learner| MemberChange::Add {
            id,
            peer_urls: vec![url.into()],
            is_learner,
        };
        assert_eq!(
            add(3, "http://b", true).apply_to(&table, 1),
            Err(ClusterError::PeerUrlExists)
        );
        assert_eq!(
            add(2, "http://c", true).apply_to(&table, 1),
            Err(ClusterError::MemberExists)
        );
        let with_learner = add(3, "http://c", true)
            .apply_to(&table, 1)
            .expect("a learner joins");
        assert_eq!(with_learner.len(), 3);
        assert!(with_learner[2].is_learner && with_learner[2].name.is_empty());
        assert_eq!(
            add(4, "http://d", true).apply_to(&with_learner, 1),
            Err(ClusterError::TooManyLearners)
        );
        assert_eq!(
            MemberChange::Promote { id: 1 }.apply_to(&with_learner, 1),
            Err(ClusterError::NotLearner)
        );
        let promoted = MemberChange::Promote { id: 3 }
            .apply_to(&with_learner, 1)
            .expect("promoted");
        assert!(!promoted[2].is_learner);
        assert_eq!(
            MemberChange::Remove { id: 9 }.apply_to(&promoted, 1),
            Err(ClusterError::MemberNotFound)
        );
        let only = vec![member(1, "http://a", false), member(3, "http://c", true)];
        assert_eq!(
            MemberChange::Remove { id: 1 }.apply_to(&only, 1),
            Err(ClusterError::NoVoterLeft)
        );
        let replaced = MemberChange::Replace {
            remove: vec![1, 2],
            add: vec![(5, vec!["http://e".into()]), (6, vec!["http://f".into()])],
        }
        .apply_to(&table, 1)
        .expect("replaced in one change");
        assert_eq!(
            replaced.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![5, 6]
        );
        assert_eq!(
            MemberChange::Replace {
                remove: vec![1],
                add: vec![(7, vec!["http://b".into()])],
            }
            .apply_to(&table, 1),
            Err(ClusterError::PeerUrlExists)
        );
        let updated = MemberChange::Update {
            id: 2,
            peer_urls: vec!["http://b2".into()],
        }
        .apply_to(&table, 1)
        .expect("updated");
        assert_eq!(updated[1].peer_urls, vec!["http://b2".to_string()]);
    }
}
