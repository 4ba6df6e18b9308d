//! Casper-FFG over the metric reports: every block is a checkpoint, a report's optional vote is
//! a link (source -> target), and only votes committed in blocks count, so every node computes
//! the same justified and final blocks from the same chain.
//!
//! A block T is justified when `2N/3 + 1` validators have committed votes with the same
//! justified source S (an ancestor of T) and target T. A justified S is final when such a link
//! goes from S to a block T and every block from S to T is justified ("k-finality", from the
//! Casper FFG and Gasper papers; k = 1, the link to S's child, is the usual case). With k = 1
//! alone, a network whose votes for block h reach the producers only in time for h + 2 would
//! cast only skip links (h - 2 -> h): every block justified, none ever final. k-finality keeps
//! the same two voting rules, which are what the safety argument rests on. The state is kept per block incrementally: the tallies of links
//! whose source is at or above the final height, and the justified blocks above the final one.

use crate::types::{Checkpoint, Vote};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct FinalityState {
    /// The highest justified block on this chain.
    pub justified: Checkpoint,
    /// The highest final block on this chain. Never reverted.
    pub finalized: Checkpoint,
    /// Every justified block at or above `finalized`, `finalized` included.
    pub justified_above_final: BTreeSet<Checkpoint>,
    /// Validator indexes that committed each link, for links with source at or above `finalized`.
    pub links: BTreeMap<(Checkpoint, Checkpoint), BTreeSet<u32>>,
}

/// Why a committed vote did not count. Not an error: a vote for another branch is normal.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VoteIgnored {
    TargetNotOnChain,
    SourceNotOnChain,
    SourceNotBelowTarget,
    SourceBelowFinal,
}

impl FinalityState {
    /// Genesis is justified and final.
    pub fn at_genesis(genesis: Checkpoint) -> FinalityState {
        FinalityState {
            justified: genesis,
            finalized: genesis,
            justified_above_final: BTreeSet::from([genesis]),
            links: BTreeMap::new(),
        }
    }

    /// The state after a block commits `votes` (voter index, vote). `is_on_chain` answers
    /// whether a checkpoint is a block of the chain this block extends (at or below its parent).
    /// Returns the new state and, per vote, whether it counted.
    pub fn with_votes(
        &self,
        votes: &[(u32, Vote)],
        quorum: usize,
        is_on_chain: &dyn Fn(&Checkpoint) -> bool,
    ) -> (FinalityState, Vec<Result<(), VoteIgnored>>) {
        let mut next = self.clone();
        let mut outcomes = Vec::with_capacity(votes.len());
        for (voter, vote) in votes {
            let outcome = next.count_vote(*voter, vote, is_on_chain);
            outcomes.push(outcome);
        }
        if votes.is_empty() {
            return (next, outcomes);
        }
        next.justify_and_finalize(quorum);
        (next, outcomes)
    }

    fn count_vote(
        &mut self,
        voter: u32,
        vote: &Vote,
        is_on_chain: &dyn Fn(&Checkpoint) -> bool,
    ) -> Result<(), VoteIgnored> {
        if vote.source.height >= vote.target.height {
            return Err(VoteIgnored::SourceNotBelowTarget);
        }
        if vote.source.height < self.finalized.height {
            return Err(VoteIgnored::SourceBelowFinal);
        }
        if !is_on_chain(&vote.target) {
            return Err(VoteIgnored::TargetNotOnChain);
        }
        if !is_on_chain(&vote.source) {
            return Err(VoteIgnored::SourceNotOnChain);
        }
        // A set: a validator's duplicate vote for the same link counts once.
        self.links.entry((vote.source, vote.target)).or_default().insert(voter);
        Ok(())
    }

    fn justify_and_finalize(&mut self, quorum: usize) {
        // Justification can chain (a newly justified block may be the source of another
        // supermajority link), so repeat until nothing changes. Links are few: this is cheap.
        loop {
            let newly_justified: Vec<Checkpoint> = self
                .links
                .iter()
                .filter(|((source, target), voters)| {
                    voters.len() >= quorum
                        && self.justified_above_final.contains(source)
                        && !self.justified_above_final.contains(target)
                })
                .map(|((_, target), _)| *target)
                .collect();
            if newly_justified.is_empty() {
                break;
            }
            self.justified_above_final.extend(newly_justified);
        }
        self.justified = *self
            .justified_above_final
            .iter()
            .max_by_key(|checkpoint| checkpoint.height)
            .expect("the final block is always justified");
        // k-finality: S is final when a supermajority link S -> T exists and every block from S
        // to T is justified (k = T - S; k = 1 is the link to the child). Justified checkpoints
        // kept here are all on this chain, so a height present means that block is justified.
        let justified_heights: BTreeSet<u64> =
            self.justified_above_final.iter().map(|checkpoint| checkpoint.height).collect();
        let newly_final = self
            .links
            .iter()
            .filter(|((source, target), voters)| {
                voters.len() >= quorum
                    && self.justified_above_final.contains(source)
                    && (source.height + 1..=target.height).all(|height| justified_heights.contains(&height))
            })
            .map(|((source, _), _)| *source)
            .max_by_key(|source| source.height);
        if let Some(final_checkpoint) = newly_final {
            if final_checkpoint.height > self.finalized.height {
                self.finalized = final_checkpoint;
                let final_height = final_checkpoint.height;
                self.justified_above_final.retain(|checkpoint| checkpoint.height >= final_height);
                self.links.retain(|(source, _), _| source.height >= final_height);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Hash;

    fn checkpoint(height: u64) -> Checkpoint {
        Checkpoint { height, hash: Hash([height as u8; 32]) }
    }

    fn vote(source: u64, target: u64) -> Vote {
        Vote { source: checkpoint(source), target: checkpoint(target) }
    }

    fn on_chain(checkpoint: &Checkpoint) -> bool {
        checkpoint.hash == Hash([checkpoint.height as u8; 32])
    }

    struct Case {
        desc: &'static str,
        votes: Vec<(u32, Vote)>,
        justified: u64,
        finalized: u64,
    }

    /// Table-driven: 4 validators (quorum 3), each case starts from genesis at height 0.
    #[test]
    fn justification_and_finalization_table() {
        let cases = vec![
            Case { desc: "no votes", votes: vec![], justified: 0, finalized: 0 },
            Case {
                desc: "two votes are not a quorum",
                votes: vec![(0, vote(0, 1)), (1, vote(0, 1))],
                justified: 0,
                finalized: 0,
            },
            Case {
                desc: "three votes justify the target",
                votes: vec![(0, vote(0, 1)), (1, vote(0, 1)), (2, vote(0, 1))],
                justified: 1,
                finalized: 0,
            },
            Case {
                desc: "duplicate votes count once",
                votes: vec![(0, vote(0, 1)), (0, vote(0, 1)), (1, vote(0, 1)), (1, vote(0, 1))],
                justified: 0,
                finalized: 0,
            },
            Case {
                desc: "a chain of links to a child justifies and finalizes",
                votes: vec![
                    (0, vote(0, 1)),
                    (1, vote(0, 1)),
                    (2, vote(0, 1)),
                    (0, vote(1, 2)),
                    (1, vote(1, 2)),
                    (3, vote(1, 2)),
                ],
                justified: 2,
                finalized: 1,
            },
            Case {
                desc: "a link from an unjustified source justifies nothing",
                votes: vec![(0, vote(1, 2)), (1, vote(1, 2)), (2, vote(1, 2))],
                justified: 0,
                finalized: 0,
            },
            Case {
                desc: "a skip link over an unjustified block justifies but does not finalize the source",
                votes: vec![(0, vote(0, 2)), (1, vote(0, 2)), (2, vote(0, 2))],
                justified: 2,
                finalized: 0,
            },
            Case {
                desc: "a skip link over justified blocks finalizes its source (k-finality)",
                votes: vec![
                    (0, vote(0, 1)),
                    (1, vote(0, 1)),
                    (2, vote(0, 1)),
                    (0, vote(0, 2)),
                    (1, vote(0, 2)),
                    (2, vote(0, 2)),
                    (0, vote(1, 3)),
                    (1, vote(1, 3)),
                    (2, vote(1, 3)),
                ],
                justified: 3,
                finalized: 1,
            },
            Case {
                desc: "genesis to its child finalizes genesis only",
                votes: vec![(0, vote(0, 1)), (1, vote(0, 1)), (2, vote(0, 1)), (3, vote(0, 1))],
                justified: 1,
                finalized: 0,
            },
            Case {
                desc: "votes whose target is off this chain are ignored",
                votes: vec![
                    (0, Vote { source: checkpoint(0), target: Checkpoint { height: 1, hash: Hash([99; 32]) } }),
                    (1, Vote { source: checkpoint(0), target: Checkpoint { height: 1, hash: Hash([99; 32]) } }),
                    (2, Vote { source: checkpoint(0), target: Checkpoint { height: 1, hash: Hash([99; 32]) } }),
                ],
                justified: 0,
                finalized: 0,
            },
        ];
        for case in cases {
            let start = FinalityState::at_genesis(checkpoint(0));
            let (state, _) = start.with_votes(&case.votes, 3, &on_chain);
            assert_eq!(state.justified.height, case.justified, "{}", case.desc);
            assert_eq!(state.finalized.height, case.finalized, "{}", case.desc);
        }
    }

    #[test]
    fn a_source_that_is_not_an_ancestor_is_ignored_and_said_so() {
        let start = FinalityState::at_genesis(checkpoint(0));
        let foreign_source = Vote { source: Checkpoint { height: 1, hash: Hash([77; 32]) }, target: checkpoint(2) };
        let (state, outcomes) = start.with_votes(&[(0, foreign_source), (1, vote(2, 1))], 3, &on_chain);
        assert_eq!(outcomes, vec![Err(VoteIgnored::SourceNotOnChain), Err(VoteIgnored::SourceNotBelowTarget)]);
        assert!(state.links.is_empty());
    }

    #[test]
    fn finalizing_prunes_links_and_justified_blocks_below_final() {
        let mut state = FinalityState::at_genesis(checkpoint(0));
        for height in 1..=5u64 {
            let votes: Vec<(u32, Vote)> = (0..3).map(|voter| (voter, vote(height - 1, height))).collect();
            state = state.with_votes(&votes, 3, &on_chain).0;
        }
        assert_eq!(state.justified.height, 5);
        assert_eq!(state.finalized.height, 4);
        assert!(state.links.keys().all(|(source, _)| source.height >= 4));
        assert!(state.justified_above_final.iter().all(|checkpoint| checkpoint.height >= 4));
        // A late vote whose source is below final no longer counts.
        let (_, outcomes) = state.with_votes(&[(3, vote(1, 2))], 3, &on_chain);
        assert_eq!(outcomes, vec![Err(VoteIgnored::SourceBelowFinal)]);
    }
}
