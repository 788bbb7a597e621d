//! Which members of the cluster should vote, pure: the same inputs give the same voters on
//! every node, and a change goes one step at a time.
//!
//! The group has 1 voter for 1–2 nodes, 3 for 3–6 and 5 for 7 or more (an even number adds
//! no tolerance). Voters that are up stay voters, so a healthy group does not churn; a voter
//! down for longer than `voter_replace_after` makes room. Seats go first to nodes tagged
//! `server`, then by name.

use std::collections::BTreeSet;

use super::RaftId;

/// A node that could vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Its id in the group.
    pub id: RaftId,
    /// Its node name (the tie-breaker).
    pub name: String,
    /// Tagged `server`: preferred.
    pub server: bool,
    /// Up now (not suspected, not down).
    pub up: bool,
    /// Down for longer than `voter_replace_after`: its seat may go to another.
    pub gone: bool,
}

/// How many voters a cluster of `nodes` nodes has.
pub fn voter_count(nodes: usize) -> usize {
    match nodes {
        0 => 0,
        1..=2 => 1,
        3..=6 => 3,
        _ => 5,
    }
}

/// The voters the group should have, given the current ones and every node of the cluster.
pub fn desired(current: &BTreeSet<RaftId>, nodes: &[Candidate]) -> BTreeSet<RaftId> {
    let want = voter_count(nodes.iter().filter(|c| !c.gone).count());
    // Current voters not gone keep their seats (a voter briefly down keeps it), then the
    // best of the rest that are up.
    let mut keep: Vec<&Candidate> = nodes
        .iter()
        .filter(|c| current.contains(&c.id) && !c.gone)
        .collect();
    keep.sort_by_key(|c| rank(c));
    keep.truncate(want);
    let mut rest: Vec<&Candidate> = nodes
        .iter()
        .filter(|c| c.up && !c.gone && !keep.iter().any(|k| k.id == c.id))
        .collect();
    rest.sort_by_key(|c| rank(c));
    keep.into_iter()
        .chain(rest)
        .take(want)
        .map(|c| c.id)
        .collect()
}

fn rank(c: &Candidate) -> (bool, &str) {
    (!c.server, c.name.as_str())
}

/// One step from the current voters towards the desired ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Add this node as a learner, or promote it once it has caught up.
    Add(RaftId),
    /// Remove this voter.
    Remove(RaftId),
}

/// The next membership change: additions first (so the group never shrinks below what it
/// needs while it changes), one at a time; `None` when the voters are as desired.
pub fn next_step(current: &BTreeSet<RaftId>, desired: &BTreeSet<RaftId>) -> Option<Step> {
    if let Some(add) = desired.difference(current).next() {
        return Some(Step::Add(*add));
    }
    current.difference(desired).next().map(|r| Step::Remove(*r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: RaftId, name: &str, server: bool, up: bool, gone: bool) -> Candidate {
        Candidate {
            id,
            name: name.into(),
            server,
            up,
            gone,
        }
    }

    fn set(ids: &[RaftId]) -> BTreeSet<RaftId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn voters_by_cluster_size() {
        let want = [(0, 0), (1, 1), (2, 1), (3, 3), (6, 3), (7, 5), (100, 5)];
        for (nodes, voters) in want {
            assert_eq!(voter_count(nodes), voters, "{nodes} nodes");
        }
    }

    #[test]
    fn choices_are_stable_prefer_servers_and_replace_the_gone() {
        let up = |id, name| node(id, name, false, true, false);
        // (what, current voters, nodes, desired voters)
        type Case = (&'static str, Vec<RaftId>, Vec<Candidate>, Vec<RaftId>);
        let cases: Vec<Case> = vec![
            ("a lone node votes", vec![], vec![up(1, "a")], vec![1]),
            (
                "three nodes: all vote, whatever the order they came in",
                vec![2],
                vec![up(3, "c"), up(1, "a"), up(2, "b")],
                vec![1, 2, 3],
            ),
            (
                "servers first, then names",
                vec![],
                vec![
                    up(1, "a"),
                    up(2, "b"),
                    node(3, "c", true, true, false),
                    up(4, "d"),
                ],
                vec![1, 2, 3],
            ),
            (
                "sitting voters keep their seats over better-ranked newcomers",
                vec![3, 4, 5],
                vec![up(1, "a"), up(2, "b"), up(3, "c"), up(4, "d"), up(5, "e")],
                vec![3, 4, 5],
            ),
            (
                "a voter briefly down keeps its seat",
                vec![1, 2, 3],
                vec![
                    up(1, "a"),
                    node(2, "b", false, false, false),
                    up(3, "c"),
                    up(4, "d"),
                ],
                vec![1, 2, 3],
            ),
            (
                "a voter gone for good is replaced by a node that is up",
                vec![1, 2, 3],
                vec![
                    up(1, "a"),
                    node(2, "b", false, false, true),
                    up(3, "c"),
                    up(4, "d"),
                ],
                vec![1, 3, 4],
            ),
            (
                "no seat goes to a node that is down",
                vec![],
                vec![up(1, "a"), node(2, "b", false, false, false), up(3, "c")],
                vec![1, 3],
            ),
        ];
        for (what, current, nodes, want) in cases {
            assert_eq!(desired(&set(&current), &nodes), set(&want), "{what}");
            // The same inputs in another order give the same voters.
            let mut reversed = nodes.clone();
            reversed.reverse();
            assert_eq!(
                desired(&set(&current), &reversed),
                set(&want),
                "{what} (reversed)"
            );
        }
    }

    #[test]
    fn changes_go_one_at_a_time_additions_first() {
        assert_eq!(next_step(&set(&[1]), &set(&[1])), None);
        assert_eq!(next_step(&set(&[1]), &set(&[1, 2, 3])), Some(Step::Add(2)));
        assert_eq!(
            next_step(&set(&[1, 2, 3]), &set(&[1, 3, 4])),
            Some(Step::Add(4))
        );
        assert_eq!(
            next_step(&set(&[1, 2, 3, 4]), &set(&[1, 3, 4])),
            Some(Step::Remove(2))
        );
    }
}
