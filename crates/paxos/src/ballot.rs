//! Ballots: the proposal numbers that order every attempt to lead.

use std::fmt;

/// Identifies a node (a replica playing proposer, acceptor and learner).
pub type NodeId = u64;

/// A proposal number, totally ordered by `round` and then by `node`.
///
/// The node id sits in the low-order position, so two proposers can never
/// pick the same ballot: a node only ever proposes with ballots that carry its
/// own id. The derived `Ord` relies on the field order below.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ballot {
    /// The high-order part; a proposer raises it to outbid every ballot it saw.
    pub round: u64,
    /// The proposer that owns this ballot.
    pub node: NodeId,
}

impl Ballot {
    /// The ballot below every real one: nothing has been promised yet.
    pub const ZERO: Ballot = Ballot { round: 0, node: 0 };

    /// Rounds above this are refused as far-future: no honest proposer gets
    /// near it by counting elections, and refusing them keeps `round + 1` from
    /// ever overflowing.
    pub const MAX_ROUND: u64 = 1 << 48;

    /// Creates a ballot.
    pub const fn new(round: u64, node: NodeId) -> Self {
        Ballot { round, node }
    }

    /// The smallest ballot owned by `node` that is above `seen`.
    ///
    /// This is how a proposer outbids everything it has observed while using
    /// only its own ballots.
    pub fn next_above(seen: Ballot, node: NodeId) -> Ballot {
        let next = if Ballot::new(seen.round, node) > seen {
            Ballot::new(seen.round, node)
        } else {
            Ballot::new(seen.round + 1, node)
        };
        debug_assert!(next > seen && next.node == node);
        next
    }

    /// Whether this ballot's round is one an honest proposer could have used.
    pub fn is_plausible(&self) -> bool {
        self.round <= Ballot::MAX_ROUND
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_by_round_then_node() {
        assert!(Ballot::new(1, 9) < Ballot::new(2, 0));
        assert!(Ballot::new(2, 1) < Ballot::new(2, 3));
        assert_eq!(Ballot::new(2, 3), Ballot::new(2, 3));
        assert!(Ballot::ZERO < Ballot::new(0, 1));
    }

    #[test]
    fn next_above_uses_own_id_and_outbids() {
        assert_eq!(Ballot::next_above(Ballot::new(4, 1), 3), Ballot::new(4, 3));
        assert_eq!(Ballot::next_above(Ballot::new(4, 5), 3), Ballot::new(5, 3));
        assert_eq!(Ballot::next_above(Ballot::new(4, 3), 3), Ballot::new(5, 3));
        assert_eq!(Ballot::next_above(Ballot::ZERO, 1), Ballot::new(0, 1));
    }
}
