//! The redb StorageEngine against its reference model, `testkit::ModelStorage`: real nodes on a
//! lock-step network (with partitions that force reorganisations) feed every storage action to
//! both, and every question is asked of both. Then reopening, restarting a node from the
//! database, and the refusals of `create` and `open` (which must never change the file). Then
//! the pending-transfer journal and the dropped transfers (which the model does not have), on
//! chains built block by block so each test chooses what becomes final when, and the refusal of
//! databases of earlier schemas. An equivocating validator on the lock-step network puts
//! evidence in blocks, offences and jail in the state: the database serves and restores them.

#![allow(clippy::unwrap_used)]

use redb::ReadableDatabase;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tinychain_core::crypto::SignatureCache;
use tinychain_core::election::rank_candidates;
use tinychain_core::genesis::{genesis_block, Genesis};
use tinychain_core::mempool::{DropReason, DroppedTransfer, MempoolConfig};
use tinychain_core::message::Message;
use tinychain_core::node::{Action, ChainOp, Commit, Event, Node, NodeConfig, Restored};
use tinychain_core::state::{ChainState, StateDelta};
use tinychain_core::testkit::{account_key, fast_genesis, sign_transfer, validator_key, ModelStorage};
use tinychain_core::types::{Address, Hash, Height, Vote};
use tinychain_core::types::{Block, BlockHeader, Checkpoint, Signature, Transfer};
use tinychain_core::validate::{block_hash, transfer_id};
use tinychain_net::wire::PeerAddress;
use tinychain_node::storage::{Storage, StorageError, TxLocation, JOURNAL_TRANSFERS_MAX, SCHEMA_VERSION};

/// One node's disk twice: the model and the real database, fed the same actions.
struct Disk {
    model: ModelStorage,
    /// `None` only while it is reopened.
    database: Option<Storage>,
    path: PathBuf,
    rollbacks: u64,
    applies: u64,
    /// Every transfer id ever applied on this node (canonical now or rolled back since).
    transfer_ids_seen: BTreeSet<Hash>,
}

/// `testkit::LocalNet`'s loop, with a `Disk` per node instead of a `ModelStorage`: lock-step
/// delivery on one virtual clock with a fixed latency, no randomness.
struct Net {
    genesis: Genesis,
    now_ms: u64,
    latency_ms: u64,
    nodes: Vec<Node>,
    disks: Vec<Disk>,
    up: Vec<bool>,
    blocked: Vec<Vec<bool>>,
    wake_at: Vec<u64>,
    queue: BTreeMap<(u64, u64), (usize, usize, Message)>,
    sequence: u64,
    cache: Arc<SignatureCache>,
    /// This node signs a second block on the parent of each block it produces and shows each
    /// block to a different half of its peers (as the `test-misbehaviour` driver does).
    equivocator: Option<usize>,
    _directory: tempfile::TempDir,
}

/// `block` with its timestamp 1 ms later, signed again by `key`: a different header on the
/// same parent by the same producer (the state root does not cover the timestamp).
fn equivocating_twin(block: &Block, key: &tinychain_core::crypto::Keypair) -> Arc<Block> {
    let mut header = block.header.clone();
    header.timestamp_ms += 1;
    header.signature = key.sign(&tinychain_core::codec::header_signing_bytes(&header));
    Arc::new(Block { header, ..block.clone() })
}

fn fresh_node(genesis: &Genesis, index: usize, cache: &Arc<SignatureCache>) -> Node {
    let config = NodeConfig {
        genesis: genesis.clone(),
        key: validator_key(index),
        verify_threads: 1,
        mempool: MempoolConfig::default(),
        unmeasured_metrics: (0, 0),
    };
    Node::new(config, cache.clone())
}

impl Disk {
    fn storage(&self) -> &Storage {
        self.database.as_ref().unwrap()
    }
}

impl Net {
    fn new(genesis: Genesis) -> Net {
        let count = genesis.validators.len();
        let directory = tempfile::tempdir().unwrap();
        let cache = Arc::new(SignatureCache::new(100_000));
        let disks = (0..count)
            .map(|index| {
                let path = directory.path().join(format!("node{index}.redb"));
                Disk {
                    model: ModelStorage::new(&genesis),
                    database: Some(Storage::create(&path, &genesis).unwrap()),
                    path,
                    rollbacks: 0,
                    applies: 0,
                    transfer_ids_seen: BTreeSet::new(),
                }
            })
            .collect();
        let mut net = Net {
            now_ms: genesis.genesis_time_ms,
            latency_ms: 5,
            nodes: (0..count).map(|index| fresh_node(&genesis, index, &cache)).collect(),
            disks,
            up: vec![true; count],
            blocked: vec![vec![false; count]; count],
            wake_at: vec![0; count],
            queue: BTreeMap::new(),
            sequence: 0,
            cache,
            equivocator: None,
            genesis,
            _directory: directory,
        };
        net.connect_all();
        net
    }

    fn connect_all(&mut self) {
        for a in 0..self.nodes.len() {
            for b in 0..self.nodes.len() {
                if a != b {
                    let peer = self.nodes[b].node_id();
                    self.deliver(a, Event::PeerConnected { peer });
                }
            }
        }
    }

    fn index_of(&self, id: &Address) -> usize {
        self.nodes.iter().position(|node| &node.node_id() == id).unwrap()
    }

    fn deliver(&mut self, index: usize, event: Event) {
        if !self.up[index] {
            return;
        }
        let actions = self.nodes[index].step(self.now_ms, event);
        for action in actions {
            match action {
                Action::CommitBlocks(ref commit) => {
                    let disk = &mut self.disks[index];
                    for op in &commit.ops {
                        match op {
                            ChainOp::Rollback { .. } => disk.rollbacks += 1,
                            ChainOp::Apply { block, .. } => {
                                disk.applies += 1;
                                disk.transfer_ids_seen.extend(block.transfers.iter().map(transfer_id));
                            }
                        }
                    }
                    disk.storage().commit(commit).unwrap();
                    assert!(disk.model.carry_out(&action));
                    assert_eq!(disk.storage().tip().unwrap(), disk.model.state.tip);
                    assert_eq!(disk.storage().finalized().unwrap(), disk.model.finalized);
                    assert_eq!(disk.storage().justified().unwrap(), commit.justified);
                }
                Action::PersistReportState { last_vote, report_sequence } => {
                    let disk = &mut self.disks[index];
                    disk.storage().persist_report_state(last_vote, report_sequence).unwrap();
                    assert!(disk.model.carry_out(&action));
                }
                Action::SendTo { peer, message } => {
                    let to = self.index_of(&peer);
                    self.send(index, to, message);
                }
                Action::Broadcast { message: Message::Block(ref block), except: None }
                    if Some(index) == self.equivocator && block.header.producer == self.nodes[index].node_id() =>
                {
                    let twin = equivocating_twin(block, &validator_key(index));
                    let others: Vec<usize> = (0..self.nodes.len()).filter(|to| *to != index).collect();
                    let half = others.len() / 2;
                    for (position, to) in others.into_iter().enumerate() {
                        let shown = if position < half { block.clone() } else { twin.clone() };
                        self.send(index, to, Message::Block(shown));
                    }
                }
                Action::Broadcast { message, except } => {
                    for to in 0..self.nodes.len() {
                        if to != index && Some(self.nodes[to].node_id()) != except {
                            self.send(index, to, message.clone());
                        }
                    }
                }
                Action::ServeBlocks { peer, from_height, to_height } => {
                    // Served from the real database; the model must agree.
                    let disk = &self.disks[index];
                    let blocks = disk.storage().blocks_to_serve(from_height, to_height).unwrap();
                    assert_eq!(blocks, disk.model.blocks_to_serve(from_height, to_height));
                    let to = self.index_of(&peer);
                    self.send(index, to, Message::Blocks(blocks));
                }
                Action::WakeAt(at_ms) => self.wake_at[index] = at_ms,
                Action::Trace(_)
                | Action::DisconnectPeer { .. }
                | Action::TxAccepted { .. }
                | Action::TxRejected { .. }
                | Action::TxDropped(_) => {}
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, message: Message) {
        if self.blocked[from][to] {
            return;
        }
        self.sequence += 1;
        self.queue.insert((self.now_ms + self.latency_ms, self.sequence), (from, to, message));
    }

    fn run_until(&mut self, until_ms: u64) {
        loop {
            let next_message = self.queue.keys().next().map(|(at, _)| *at);
            let next_wake = (0..self.nodes.len()).filter(|&i| self.up[i]).map(|i| (self.wake_at[i], i)).min();
            let message_first = match (next_message, next_wake) {
                (Some(at), Some((wake, _))) => at <= wake,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let at = if message_first { next_message.unwrap() } else { next_wake.unwrap().0 };
            if at > until_ms {
                break;
            }
            self.now_ms = self.now_ms.max(at);
            if message_first {
                let (_, (from, to, message)) = self.queue.pop_first().unwrap();
                if self.up[to] {
                    let from_id = self.nodes[from].node_id();
                    self.deliver(to, Event::MessageReceived { from: from_id, message });
                }
            } else {
                let index = next_wake.unwrap().1;
                self.wake_at[index] = u64::MAX;
                self.deliver(index, Event::Tick);
            }
        }
        self.now_ms = self.now_ms.max(until_ms);
    }

    fn partition(&mut self, group: &[usize]) {
        for a in 0..self.nodes.len() {
            for b in 0..self.nodes.len() {
                self.blocked[a][b] = group.contains(&a) != group.contains(&b);
            }
        }
    }

    fn heal(&mut self) {
        for row in self.blocked.iter_mut() {
            row.fill(false);
        }
        self.connect_all();
    }

    /// Stops node `index`, reopens its database from the file and restarts the node from what
    /// the database restores (not from the model).
    fn restart_from_disk(&mut self, index: usize) {
        self.up[index] = false;
        self.queue.retain(|_, (_, to, _)| *to != index);
        let genesis = self.genesis.clone();
        let disk = &mut self.disks[index];
        let before = disk.storage().restored().unwrap();
        // Dropping the handle closes the file; the new one must see the same chain.
        disk.database = None;
        disk.database = Some(Storage::open(&disk.path, &genesis).unwrap_or_else(|error| panic!("{error}")));
        let after = disk.storage().restored().unwrap();
        assert_restored_equal(&before, &after, "before and after reopening");
        self.nodes[index] = fresh_node(&genesis, index, &self.cache);
        self.up[index] = true;
        self.wake_at[index] = self.now_ms;
        self.deliver(index, Event::Restored(Box::new(after)));
        self.connect_all();
    }
}

/// A stream of valid transfers from the funded accounts (nonces tracked here; a transfer a
/// node refuses only wastes a nonce slot, so each sender gets its own node to submit to).
struct Workload {
    nonces: Vec<u64>,
    next: usize,
}

impl Workload {
    fn submit(&mut self, net: &mut Net, node: usize, senders: std::ops::Range<usize>, count: usize) {
        for _ in 0..count {
            let sender = senders.start + self.next % senders.len();
            self.next += 1;
            let recipient = if self.next.is_multiple_of(5) {
                // Some transfers to oneself: the history must list them once.
                account_key(sender).address()
            } else if self.next.is_multiple_of(7) {
                // Some to fresh addresses, so applies create accounts and rollbacks remove them.
                Address(*blake3::hash(&(self.next as u64).to_le_bytes()).as_bytes())
            } else {
                account_key((sender * 7 + self.next) % self.nonces.len()).address()
            };
            let transfer = sign_transfer(
                &account_key(sender),
                &net.genesis.chain_id,
                recipient,
                1_000 + self.next as u64,
                10,
                self.nonces[sender],
            );
            self.nonces[sender] += 1;
            net.deliver(node, Event::TxSubmitted(transfer));
        }
    }
}

fn assert_restored_equal(expected: &Restored, got: &Restored, context: &str) {
    assert_eq!(got.state, expected.state, "{context}: state");
    assert_eq!(got.canonical_hashes, expected.canonical_hashes, "{context}: canonical hashes");
    assert_eq!(got.final_block, expected.final_block, "{context}: final block");
    assert_eq!(got.recent_blocks.len(), expected.recent_blocks.len(), "{context}: recent block count");
    for ((got_block, got_undo), (block, undo)) in got.recent_blocks.iter().zip(&expected.recent_blocks) {
        assert_eq!(got_block, block, "{context}: recent block {}", block.header.height);
        assert_eq!(got_undo, undo, "{context}: undo of recent block {}", block.header.height);
    }
    assert_eq!(got.last_vote, expected.last_vote, "{context}: last vote");
    assert_eq!(got.report_sequence, expected.report_sequence, "{context}: report sequence");
}

/// Asks the database and the model every question and requires the same answers.
fn check_disk(genesis: &Genesis, disk: &Disk, context: &str) {
    let storage = disk.storage();
    let model = &disk.model;
    let restored = storage.restored().unwrap();
    assert_restored_equal(&model.restored(), &restored, context);
    let tip = model.state.tip;
    assert_eq!(restored.canonical_hashes.len() as u64, tip.height + 1);

    // Blocks, by height and by hash, and their undo.
    for height in 0..=tip.height + 2 {
        let block = model.block_at(height);
        assert_eq!(storage.block_at(height).unwrap(), block, "{context}: block_at({height})");
        if let Some(block) = &block {
            let hash = block_hash(&block.header);
            assert_eq!(storage.block_by_hash(&hash).unwrap().as_ref(), Some(block), "{context}: block_by_hash");
        }
        let undo = model.blocks.get(&height).map(|(_, undo)| undo.clone());
        assert_eq!(storage.undo_at(height).unwrap(), undo, "{context}: undo_at({height})");
    }
    for (from, to) in
        [(0, 0), (0, tip.height), (1, 5), (tip.height, tip.height + 10), (tip.height + 1, u64::MAX), (5, 2)]
    {
        assert_eq!(
            storage.blocks_to_serve(from, to).unwrap(),
            model.blocks_to_serve(from, to),
            "{context}: blocks_to_serve({from}, {to})"
        );
    }

    // Accounts, including some that do not exist.
    for (address, account) in &model.state.accounts {
        assert_eq!(storage.account(address).unwrap(), Some(*account), "{context}: account");
    }
    assert_eq!(storage.account(&Address([0xee; 32])).unwrap(), None);

    // The transaction index and the address history, from what the canonical blocks contain.
    let mut expected_history: BTreeMap<Address, BTreeSet<(Height, u32, Hash)>> = BTreeMap::new();
    let mut canonical_ids = BTreeSet::new();
    for (height, (block, _)) in &model.blocks {
        for (index, transfer) in block.transfers.iter().enumerate() {
            let id = transfer_id(transfer);
            let location = TxLocation { id, height: *height, index: index as u32 };
            assert_eq!(storage.tx_location(&id).unwrap(), Some(location), "{context}: tx_location");
            canonical_ids.insert(id);
            for address in [transfer.from, transfer.to] {
                expected_history.entry(address).or_default().insert((*height, index as u32, id));
            }
        }
    }
    for id in disk.transfer_ids_seen.difference(&canonical_ids) {
        assert_eq!(storage.tx_location(id).unwrap(), None, "{context}: a rolled-back transfer is not indexed");
    }

    // Which canonical transfer used each sender's nonce, and that the next nonce is unused.
    for (height, (block, _)) in &model.blocks {
        for transfer in &block.transfers {
            assert_eq!(
                storage.committed_transfer_at(&transfer.from, transfer.nonce).unwrap(),
                Some((transfer_id(transfer), *height)),
                "{context}: committed_transfer_at"
            );
        }
    }
    for (address, account) in &model.state.accounts {
        assert_eq!(storage.committed_transfer_at(address, account.nonce).unwrap(), None, "{context}: unused nonce");
    }
    assert_eq!(storage.committed_transfer_at(&Address([0xee; 32]), 0).unwrap(), None);
    for (address, entries) in &expected_history {
        let expected: Vec<TxLocation> = entries
            .iter()
            .rev()
            .map(|(height, index, id)| TxLocation { id: *id, height: *height, index: *index })
            .collect();
        assert_eq!(storage.history(address, None, usize::MAX).unwrap(), expected, "{context}: history");
        assert_eq!(storage.history(address, None, 2).unwrap(), expected[..expected.len().min(2)]);
        let middle = expected[expected.len() / 2].height;
        let below: Vec<TxLocation> = expected.iter().filter(|location| location.height < middle).copied().collect();
        assert_eq!(storage.history(address, Some(middle), usize::MAX).unwrap(), below, "{context}: history below");
        assert_eq!(storage.history(address, None, 0).unwrap(), vec![]);
    }
    assert_eq!(storage.history(&Address([0xee; 32]), None, 10).unwrap(), vec![]);

    // Elections: each canonical block's ranking over its parent's state, walking back from the
    // tip with the undo deltas.
    let mut state = model.state.clone();
    for height in (1..=tip.height).rev() {
        state.apply_delta(&model.blocks[&height].1);
        let expected = rank_candidates(genesis, &state.validators, &state.tip);
        assert_eq!(storage.election_at(height).unwrap(), Some(expected), "{context}: election_at({height})");
    }
    assert_eq!(state.tip.height, 0);
    assert_eq!(storage.election_at(0).unwrap(), None);
    assert_eq!(storage.election_at(tip.height + 1).unwrap(), None);
}

#[test]
fn the_database_answers_like_the_model_through_reorganisations_and_restarts() {
    let genesis = fast_genesis(4, 40);
    let mut net = Net::new(genesis.clone());
    let mut workload = Workload { nonces: vec![0; 40], next: 0 };

    // A healthy start with transfers.
    for step in 0..20 {
        workload.submit(&mut net, step % 4, (step % 4) * 10..(step % 4) * 10 + 10, 3);
        net.run_until(net.now_ms + 100);
    }
    // Node 3 alone builds its own branch (with transfers only it includes) while the others
    // go on; after the heal it must roll its branch back.
    net.partition(&[3]);
    for _ in 0..30 {
        workload.submit(&mut net, 3, 30..40, 2);
        workload.submit(&mut net, 0, 0..10, 2);
        net.run_until(net.now_ms + 100);
    }
    net.heal();
    net.run_until(net.now_ms + 2_000);
    for index in 0..4 {
        check_disk(&genesis, &net.disks[index], &format!("node {index} after the first heal"));
    }
    assert!(net.disks[3].rollbacks > 0, "node 3 rolled its minority branch back");

    // Two against two: no side has a quorum, both build; one side reorganises at the heal.
    net.partition(&[2, 3]);
    for _ in 0..20 {
        workload.submit(&mut net, 1, 10..20, 2);
        workload.submit(&mut net, 2, 20..30, 2);
        net.run_until(net.now_ms + 100);
    }
    net.heal();
    net.run_until(net.now_ms + 2_000);
    for index in 0..4 {
        check_disk(&genesis, &net.disks[index], &format!("node {index} after the second heal"));
    }

    // Restart every node from its database; the network goes on and the disks still agree.
    for index in 0..4 {
        net.restart_from_disk(index);
    }
    let tips_before: Vec<Height> = net.disks.iter().map(|disk| disk.model.state.tip.height).collect();
    for step in 0..20 {
        workload.submit(&mut net, step % 4, (step % 4) * 10..(step % 4) * 10 + 10, 2);
        net.run_until(net.now_ms + 100);
    }
    net.run_until(net.now_ms + 1_000);
    for (index, (disk, tip_before)) in net.disks.iter().zip(&tips_before).enumerate() {
        assert!(
            disk.model.state.tip.height > tip_before + 10,
            "node {index} restored from its database and went on producing"
        );
        assert!(disk.model.finalized.height > *tip_before, "node {index} finalizes after its restart");
        check_disk(&genesis, disk, &format!("node {index} after restarting from disk"));
    }
    let rollbacks: u64 = net.disks.iter().map(|disk| disk.rollbacks).sum();
    let applies: u64 = net.disks.iter().map(|disk| disk.applies).sum();
    let transfers: usize = net.disks[0].model.blocks.values().map(|(block, _)| block.transfers.len()).sum();
    assert!(transfers > 100, "the chain carries transfers ({transfers})");
    eprintln!("rollbacks {rollbacks}, applies {applies}, transfers on node 0's chain {transfers}");
}

#[test]
fn report_state_and_peers_persist_across_reopening() {
    let genesis = fast_genesis(4, 2);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let storage = Storage::create(&path, &genesis).unwrap();
    assert_eq!(storage.report_state().unwrap(), (None, 0));
    assert_eq!(storage.peers().unwrap(), vec![]);
    let tip = storage.tip().unwrap();
    let vote = Vote { source: tip, target: tip };
    storage.persist_report_state(Some(vote), 7).unwrap();
    let peers: Vec<PeerAddress> = (0..3)
        .map(|index| PeerAddress { id: validator_key(index).address(), addr: format!("node{index}.example:7740") })
        .collect();
    storage.save_peers(&peers).unwrap();
    storage.save_peers(&peers[1..]).unwrap();
    drop(storage);

    let storage = Storage::open(&path, &genesis).unwrap();
    assert_eq!(storage.report_state().unwrap(), (Some(vote), 7));
    assert_eq!(storage.peers().unwrap(), peers[1..].to_vec(), "save_peers replaces the table");
    let restored = storage.restored().unwrap();
    assert_eq!(restored.last_vote, Some(vote));
    assert_eq!(restored.report_sequence, 7);
    assert_eq!(restored.canonical_hashes, vec![storage.genesis_hash()]);
    assert_eq!(restored.state, ModelStorage::new(&genesis).state);
    assert!(restored.recent_blocks.is_empty());
    storage.save_peers(&[]).unwrap();
    assert_eq!(storage.peers().unwrap(), vec![]);
}

/// Node 0 signs two blocks on each parent it produces on and shows them to different halves of
/// its peers until committed evidence jails it. The blocks carrying the evidence, the committed
/// offences and the validator records (jail, production window) are on disk like the model's,
/// served to peers, and restored as they were when every node restarts from its database.
#[test]
fn evidence_offences_and_jail_are_stored_served_and_restored() {
    let genesis = fast_genesis(4, 0);
    let mut net = Net::new(genesis.clone());
    net.equivocator = Some(0);
    let equivocator = validator_key(0).address();
    let jailed_on = |disk: &Disk| disk.model.state.validators[0].jailed_until.is_some();
    for _ in 0..600 {
        if (1..4).all(|index| jailed_on(&net.disks[index])) {
            break;
        }
        net.run_until(net.now_ms + 100);
    }
    assert!((1..4).all(|index| jailed_on(&net.disks[index])), "the honest nodes jailed the equivocator");
    net.equivocator = None;
    net.run_until(net.now_ms + 3_000);

    let disk = &net.disks[1];
    let storage = disk.storage();
    let state = &disk.model.state;
    assert!(!state.offences.is_empty(), "offences are committed");
    // The heights of the blocks with evidence against node 0, read back from the database.
    let with_evidence: Vec<Height> = (1..=state.tip.height)
        .filter(|height| {
            let block = storage.block_at(*height).unwrap().unwrap();
            block.evidence.iter().any(|evidence| evidence.offender() == equivocator)
        })
        .collect();
    assert!(!with_evidence.is_empty(), "a stored block holds evidence against node 0");
    let first = with_evidence[0];
    let block = storage.block_at(first).unwrap().unwrap();
    assert_eq!(storage.block_by_hash(&block_hash(&block.header)).unwrap(), Some(block.clone()));
    assert_eq!(storage.blocks_to_serve(first, first).unwrap(), vec![block.clone()], "served with its evidence");
    assert!(block.evidence.iter().all(|evidence| evidence.kind() == "double_production"));
    // Jailed from the block that committed its latest evidence (jail is only ever extended);
    // ranked last in the election after the first.
    let record = &state.validators[0];
    let latest = *with_evidence.last().unwrap();
    assert_eq!(
        record.jailed_until,
        Some(latest + genesis.parameters.jail_blocks),
        "jail runs from the latest evidence"
    );
    let election = storage.election_at(first + 1).unwrap().unwrap();
    let last = election.last().unwrap();
    assert_eq!(last.node, equivocator, "the jailed validator ranks last: {election:?}");
    assert!(matches!(last.demotion, Some(tinychain_core::election::Demotion::Jailed { .. })), "{last:?}");
    assert!(
        state.validators.iter().any(|record| !record.recent_blocks.is_empty()),
        "the production window is in the records"
    );
    for index in 0..4 {
        check_disk(&genesis, &net.disks[index], &format!("node {index} with evidence committed"));
    }

    // Every node restarts from its database: the restored state (offences, jail, windows) is
    // the stored one (`restart_from_disk` compares it), and the chain goes on.
    let tips_before: Vec<Height> = net.disks.iter().map(|disk| disk.model.state.tip.height).collect();
    for index in 0..4 {
        let stored = net.disks[index].storage().restored().unwrap().state;
        assert_eq!(stored, net.disks[index].model.state, "node {index}: stored state");
        net.restart_from_disk(index);
        assert_eq!(net.nodes[index].state().offences, stored.offences, "node {index}: offences restored");
        assert_eq!(net.nodes[index].state().validators, stored.validators, "node {index}: records restored");
    }
    net.run_until(net.now_ms + 3_000);
    for (index, (disk, tip_before)) in net.disks.iter().zip(&tips_before).enumerate() {
        assert!(disk.model.state.tip.height > tip_before + 5, "node {index} goes on after restarting");
        assert!(disk.model.state.validators[0].jailed_until.is_some(), "node {index}: node 0 is still jailed");
        check_disk(&genesis, disk, &format!("node {index} after restarting with evidence committed"));
    }
}

// ---- refusals: never overwrite, never change the file ------------------------------------------

fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn opening_a_missing_database_says_to_initialise() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("nothing.redb");
    let error = Storage::open(&path, &fast_genesis(1, 0)).err().unwrap();
    assert!(matches!(error, StorageError::Missing { .. }), "{error}");
    assert!(error.to_string().contains("tinychain init"), "{error}");
    assert!(!path.exists(), "open never creates a file");
}

#[test]
fn create_refuses_an_existing_file_and_leaves_it_alone() {
    let genesis = fast_genesis(1, 3);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    drop(Storage::create(&path, &genesis).unwrap());
    let before = file_bytes(&path);
    let error = Storage::create(&path, &genesis).err().unwrap();
    assert!(matches!(error, StorageError::AlreadyExists { .. }), "{error}");
    assert!(file_bytes(&path) == before, "the file is unchanged");

    let other = directory.path().join("notes.txt");
    std::fs::write(&other, b"not a database").unwrap();
    let error = Storage::create(&other, &genesis).err().unwrap();
    assert!(matches!(error, StorageError::AlreadyExists { .. }), "{error}");
    assert!(file_bytes(&other) == b"not a database");
    Storage::open(&path, &genesis).unwrap();
}

#[test]
fn a_file_of_random_bytes_is_corrupt_and_unchanged() {
    let genesis = fast_genesis(1, 0);
    let directory = tempfile::tempdir().unwrap();
    for length in [1usize, 100, 4096, 70_000] {
        let path = directory.path().join(format!("random{length}.redb"));
        let bytes: Vec<u8> = (0..length).map(|index| blake3::hash(&index.to_le_bytes()).as_bytes()[0]).collect();
        std::fs::write(&path, &bytes).unwrap();
        let error = Storage::open(&path, &genesis).err().unwrap();
        assert!(matches!(error, StorageError::Corrupt { .. }), "{length} bytes: {error}");
        assert!(error.to_string().contains(&path.display().to_string()), "the message names the file: {error}");
        assert!(file_bytes(&path) == bytes, "{length} random bytes are left as they were");
    }
    let empty = directory.path().join("empty.redb");
    std::fs::write(&empty, b"").unwrap();
    let error = Storage::open(&empty, &genesis).err().unwrap();
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    assert!(file_bytes(&empty).is_empty());
}

#[test]
fn a_database_of_another_chain_is_refused_and_unchanged() {
    let ours = fast_genesis(1, 3);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    drop(Storage::create(&path, &ours).unwrap());
    let before = file_bytes(&path);

    // Same chain id, another genesis (one more allocation): the genesis hash differs.
    let other_allocations = fast_genesis(1, 4);
    let error = Storage::open(&path, &other_allocations).err().unwrap();
    match &error {
        StorageError::ForeignChain { found_chain_id, expected_chain_id, found_genesis, expected_genesis, .. } => {
            assert_eq!(found_chain_id, expected_chain_id);
            assert_ne!(found_genesis, expected_genesis);
        }
        other => panic!("expected ForeignChain, got {other}"),
    }
    // Another chain id.
    let mut other_chain = ours.clone();
    other_chain.chain_id = "another-chain".into();
    let error = Storage::open(&path, &other_chain).err().unwrap();
    assert!(matches!(error, StorageError::ForeignChain { .. }), "{error}");
    assert!(error.to_string().contains("another-chain"), "{error}");
    assert!(file_bytes(&path) == before, "refusing a foreign chain does not touch the file");
    Storage::open(&path, &ours).unwrap();
}

#[test]
fn a_redb_file_that_is_not_a_tinychain_database_is_corrupt() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("other.redb");
    {
        let database = redb::Database::create(&path).unwrap();
        let txn = database.begin_write().unwrap();
        {
            let mut table = txn.open_table(redb::TableDefinition::<&str, u64>::new("something")).unwrap();
            table.insert("key", 1).unwrap();
        }
        txn.commit().unwrap();
    }
    let before = file_bytes(&path);
    let error = Storage::open(&path, &fast_genesis(1, 0)).err().unwrap();
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("not a tinychain"), "{error}");
    assert!(file_bytes(&path) == before, "the file is unchanged");
}

#[test]
fn another_schema_version_is_refused() {
    let genesis = fast_genesis(1, 0);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    drop(Storage::create(&path, &genesis).unwrap());
    write_schema_version(&path, 99);
    let error = Storage::open(&path, &genesis).err().unwrap();
    assert!(matches!(error, StorageError::SchemaVersion { found: 99, .. }), "{error}");
}

#[test]
fn a_database_open_elsewhere_is_in_use() {
    let genesis = fast_genesis(1, 0);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let first = Storage::create(&path, &genesis).unwrap();
    let error = Storage::open(&path, &genesis).err().unwrap();
    assert!(matches!(error, StorageError::InUse { .. }), "{error}");
    assert!(error.to_string().contains("in use by another process"), "{error}");
    drop(first);
    Storage::open(&path, &genesis).unwrap();
}

/// A commit that does not follow the stored chain is a bug upstream: debug builds stop at
/// it, release builds refuse it. Either way nothing is written.
#[test]
fn a_commit_that_does_not_extend_the_tip_writes_nothing() {
    let genesis = fast_genesis(4, 0);
    let mut net = Net::new(genesis.clone());
    net.run_until(1_500);
    let disk = &net.disks[0];
    let tip = disk.storage().tip().unwrap();
    assert!(tip.height >= 3);
    // Re-applying block 2 on top of the tip.
    let (block, undo) = disk.model.blocks[&2].clone();
    let hash = block_hash(&block.header);
    let delta = disk.model.blocks[&3].1.clone();
    let commit = tinychain_core::node::Commit {
        ops: vec![ChainOp::Apply { block, hash, delta, undo }],
        tip,
        justified: tip,
        finalized: tip,
    };
    let result = disk.storage().commit(&commit);
    assert!(matches!(result, Err(StorageError::CommitMismatch { .. })), "{result:?}");
    assert_eq!(disk.storage().tip().unwrap(), tip);
    check_disk(&genesis, disk, "after a refused commit");
}

#[test]
fn a_damaged_row_is_reported_as_corrupt_naming_its_table() {
    let genesis = fast_genesis(1, 2);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    drop(Storage::create(&path, &genesis).unwrap());
    {
        let database = redb::Database::open(&path).unwrap();
        let txn = database.begin_write().unwrap();
        {
            let mut blocks = txn.open_table(redb::TableDefinition::<u64, &[u8]>::new("blocks")).unwrap();
            blocks.insert(0, [1u8, 2, 3].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let storage = Storage::open(&path, &genesis).unwrap();
    let error = storage.block_at(0).err().unwrap();
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("table blocks"), "{error}");
    assert!(matches!(storage.restored(), Err(StorageError::Corrupt { .. })));
    // The rest still answers.
    assert_eq!(storage.tip().unwrap().height, 0);
    assert!(storage.account(&account_key(0).address()).unwrap().is_some());
}

// ---- the pending-transfer journal and the dropped transfers ------------------------------------

/// Builds commits straight from a `ChainState`, so a test chooses exactly what each block holds
/// and when it becomes final. Storage checks neither signatures nor state roots, so the blocks
/// carry none; the deltas are what `apply_block` would compute for these transfers.
struct ChainBuilder {
    genesis: Genesis,
    state: ChainState,
    /// Canonical block hashes, genesis first.
    hashes: Vec<Hash>,
    /// The undo of each canonical block above genesis, for rollbacks.
    undos: Vec<StateDelta>,
}

impl ChainBuilder {
    fn new(genesis: &Genesis) -> ChainBuilder {
        let state = genesis_block(genesis).1;
        ChainBuilder { genesis: genesis.clone(), hashes: vec![state.tip.hash], state, undos: Vec::new() }
    }

    fn checkpoint(&self, height: Height) -> Checkpoint {
        Checkpoint { height, hash: self.hashes[height as usize] }
    }

    /// The next block on the tip holding `transfers` (which must fit the accounts' nonces).
    fn apply(&mut self, transfers: Vec<Transfer>) -> ChainOp {
        let height = self.state.tip.height + 1;
        let producer = self.genesis.validators[0].id;
        let mut touched = BTreeMap::new();
        let account = |touched: &BTreeMap<Address, _>, address: &Address| {
            touched.get(address).copied().unwrap_or_else(|| self.state.account(address))
        };
        for transfer in &transfers {
            let mut sender = account(&touched, &transfer.from);
            assert_eq!(sender.nonce, transfer.nonce, "the test builds a valid chain");
            sender.balance -= transfer.amount + transfer.fee;
            sender.nonce += 1;
            touched.insert(transfer.from, sender);
            let mut recipient = account(&touched, &transfer.to);
            recipient.balance += transfer.amount;
            touched.insert(transfer.to, recipient);
        }
        let reward = self.genesis.parameters.block_reward;
        let fees: u64 = transfers.iter().map(|transfer| transfer.fee).sum();
        let mut producer_account = account(&touched, &producer);
        producer_account.balance += reward + fees;
        touched.insert(producer, producer_account);
        let header = BlockHeader {
            chain_id: self.genesis.chain_id.clone(),
            height,
            prev_hash: self.state.tip.hash,
            timestamp_ms: self.state.tip_timestamp_ms + self.genesis.parameters.block_interval_ms,
            producer,
            rank: 0,
            tx_root: Hash::default(),
            report_root: Hash::default(),
            evidence_root: Hash::default(),
            state_root: Hash::default(),
            signature: Signature::default(),
        };
        let hash = block_hash(&header);
        let delta = StateDelta {
            tip: Checkpoint { height, hash },
            tip_timestamp_ms: header.timestamp_ms,
            accounts: touched.into_iter().map(|(address, account)| (address, Some(account))).collect(),
            validators: vec![],
            finality: self.state.finality.clone(),
            supply: self.state.supply + reward,
            offences: vec![],
        };
        let undo = self.state.undo_for(&delta);
        self.state.apply_delta(&delta);
        self.hashes.push(hash);
        self.undos.push(undo.clone());
        ChainOp::Apply {
            block: Arc::new(Block { header, transfers, reports: vec![], evidence: vec![] }),
            hash,
            delta,
            undo,
        }
    }

    /// Rolls the tip block back.
    fn roll_back(&mut self) -> ChainOp {
        let height = self.state.tip.height;
        let hash = self.hashes.pop().unwrap();
        let undo = self.undos.pop().unwrap();
        self.state.apply_delta(&undo);
        ChainOp::Rollback { height, hash, undo }
    }

    /// A commit of `ops` ending at the current tip, with `finalized` (and justified) at that height.
    fn commit(&self, ops: Vec<ChainOp>, finalized: Height) -> Commit {
        let finalized = self.checkpoint(finalized);
        Commit { ops, tip: self.state.tip, justified: finalized, finalized }
    }
}

/// A signed transfer of account `sender` to account `to`; `amount` tells apart competing
/// transfers for the same (sender, nonce) slot.
fn transfer_of(genesis: &Genesis, sender: usize, nonce: u64, to: usize, amount: u64) -> (Hash, Transfer) {
    let transfer = sign_transfer(&account_key(sender), &genesis.chain_id, account_key(to).address(), amount, 10, nonce);
    (transfer_id(&transfer), transfer)
}

/// The journal's order: sender, then nonce, then id.
fn journal_order(entries: &[(Hash, Transfer)]) -> Vec<(Hash, Transfer)> {
    let mut sorted = entries.to_vec();
    sorted.sort_by_key(|(id, transfer)| (transfer.from, transfer.nonce, *id));
    sorted
}

fn ids(entries: &[(Hash, Transfer)]) -> BTreeSet<Hash> {
    entries.iter().map(|(id, _)| *id).collect()
}

#[test]
fn the_journal_round_trips_in_sender_nonce_id_order_and_survives_reopening() {
    let genesis = fast_genesis(4, 6);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let storage = Storage::create(&path, &genesis).unwrap();
    assert_eq!(storage.journal().unwrap(), vec![]);
    assert_eq!(storage.journal_len(), 0);

    // Out of order, two competing for one slot (sender 2, nonce 1), added in two batches.
    let entries = vec![
        transfer_of(&genesis, 3, 0, 1, 100),
        transfer_of(&genesis, 2, 1, 0, 100),
        transfer_of(&genesis, 2, 0, 0, 100),
        transfer_of(&genesis, 2, 1, 0, 200),
        transfer_of(&genesis, 5, 7, 4, 100),
        transfer_of(&genesis, 2, 10, 0, 100),
    ];
    storage.journal_add(&entries[..2]).unwrap();
    assert_eq!(storage.journal_len(), 2);
    storage.journal_add(&entries[2..]).unwrap();
    assert_eq!(storage.journal_len(), entries.len());
    assert_eq!(storage.journal().unwrap(), journal_order(&entries));
    // Re-adding ids already there (twice in one batch, too) changes nothing.
    storage.journal_add(&[entries[0].clone(), entries[4].clone(), entries[4].clone()]).unwrap();
    assert_eq!(storage.journal_len(), entries.len());
    assert_eq!(storage.journal().unwrap(), journal_order(&entries));
    storage.journal_add(&[]).unwrap();
    drop(storage);

    let storage = Storage::open(&path, &genesis).unwrap();
    assert_eq!(storage.journal_len(), entries.len(), "the count is loaded at open");
    assert_eq!(storage.journal().unwrap(), journal_order(&entries));
    // Remove one of the competing pair and an entry that is not there; the other stays.
    let absent = transfer_of(&genesis, 4, 0, 1, 100);
    storage.journal_remove(&[entries[1].clone(), absent]).unwrap();
    let remaining: Vec<_> = entries.iter().filter(|entry| entry.0 != entries[1].0).cloned().collect();
    assert_eq!(storage.journal().unwrap(), journal_order(&remaining));
    assert_eq!(storage.journal_len(), remaining.len());
    drop(storage);
    let storage = Storage::open(&path, &genesis).unwrap();
    assert_eq!(storage.journal().unwrap(), journal_order(&remaining));
    storage.journal_remove(&remaining).unwrap();
    assert_eq!((storage.journal().unwrap(), storage.journal_len()), (vec![], 0));
}

/// Unsigned transfers with distinct (sender, nonce) slots, for filling the journal quickly: the
/// journal checks ids, never signatures.
fn unsigned_transfers(genesis: &Genesis, range: std::ops::Range<u64>) -> Vec<(Hash, Transfer)> {
    range
        .map(|index| {
            let transfer = Transfer {
                chain_id: genesis.chain_id.clone(),
                from: Address(*blake3::hash(&(index % 1_000).to_le_bytes()).as_bytes()),
                to: Address([1; 32]),
                amount: 1,
                fee: 1,
                nonce: index / 1_000,
                signature: Signature([7; 64]),
            };
            (transfer_id(&transfer), transfer)
        })
        .collect()
}

#[test]
fn a_full_journal_refuses_more_and_its_file_is_unchanged() {
    let genesis = fast_genesis(1, 0);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let storage = Storage::create(&path, &genesis).unwrap();
    let max = JOURNAL_TRANSFERS_MAX as u64;
    let held = unsigned_transfers(&genesis, 0..max - 1);
    storage.journal_add(&held).unwrap();
    assert_eq!(storage.journal_len(), JOURNAL_TRANSFERS_MAX - 1);

    // Two new ones would pass the bound by one: refused whole, even the one that fits.
    let more = unsigned_transfers(&genesis, max..max + 2);
    let error = storage.journal_add(&more).err().unwrap();
    assert!(
        matches!(error, StorageError::JournalFull { held, max } if held == JOURNAL_TRANSFERS_MAX - 1 && max == JOURNAL_TRANSFERS_MAX),
        "{error}"
    );
    assert_eq!(storage.journal_len(), JOURNAL_TRANSFERS_MAX - 1);
    // One fits exactly; then re-adding an entry already there is still fine, a new one is not.
    storage.journal_add(&more[..1]).unwrap();
    assert_eq!(storage.journal_len(), JOURNAL_TRANSFERS_MAX);
    storage.journal_add(&[held[5].clone(), more[0].clone()]).unwrap();
    let error = storage.journal_add(&[held[6].clone(), more[1].clone()]).err().unwrap();
    assert!(matches!(error, StorageError::JournalFull { held, .. } if held == JOURNAL_TRANSFERS_MAX), "{error}");
    assert!(error.to_string().contains("nothing was added"), "{error}");
    drop(storage);

    let storage = Storage::open(&path, &genesis).unwrap();
    assert_eq!(storage.journal_len(), JOURNAL_TRANSFERS_MAX);
    let journal = storage.journal().unwrap();
    let mut expected = held;
    expected.push(more[0].clone());
    assert_eq!(ids(&journal), ids(&expected), "the file holds what was accepted and nothing refused");
    assert_eq!(journal, journal_order(&expected));
    let error = storage.journal_add(&more[1..]).err().unwrap();
    assert!(matches!(error, StorageError::JournalFull { .. }), "the bound holds after reopening: {error}");
    // Room again after removals.
    storage.journal_remove(&expected[..10]).unwrap();
    storage.journal_add(&more[1..]).unwrap();
    assert_eq!(storage.journal_len(), JOURNAL_TRANSFERS_MAX - 9);
}

#[test]
fn finality_deletes_the_journal_entries_of_every_slot_it_settles_and_nothing_before() {
    let genesis = fast_genesis(4, 12);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let storage = Storage::create(&path, &genesis).unwrap();
    let mut chain = ChainBuilder::new(&genesis);

    let included = transfer_of(&genesis, 0, 0, 1, 100);
    let competitor = transfer_of(&genesis, 0, 0, 1, 200);
    let next_nonce = transfer_of(&genesis, 0, 1, 1, 100);
    let other_sender = transfer_of(&genesis, 1, 0, 2, 100);
    let never_sent = transfer_of(&genesis, 3, 0, 2, 100);
    storage
        .journal_add(&[
            included.clone(),
            competitor.clone(),
            next_nonce.clone(),
            other_sender.clone(),
            never_sent.clone(),
        ])
        .unwrap();

    // Applied, not final: a reorganisation could still drop the block, so the entries stay.
    let op = chain.apply(vec![included.1.clone()]);
    storage.commit(&chain.commit(vec![op], 0)).unwrap();
    let op = chain.apply(vec![other_sender.1.clone(), transfer_of(&genesis, 4, 0, 5, 1).1]);
    storage.commit(&chain.commit(vec![op], 0)).unwrap();
    assert_eq!(storage.journal_len(), 5, "nothing is final yet");
    assert_eq!(ids(&storage.journal().unwrap()).len(), 5);

    // Block 1 final: its slot (sender 0, nonce 0) is settled, for the included transfer and its
    // competitor alike; sender 0's next nonce is not.
    let op = chain.apply(vec![]);
    storage.commit(&chain.commit(vec![op], 1)).unwrap();
    assert_eq!(ids(&storage.journal().unwrap()), ids(&[next_nonce.clone(), other_sender.clone(), never_sent.clone()]));
    assert_eq!(storage.journal_len(), 3);
    // The same final height again deletes nothing more.
    let op = chain.apply(vec![]);
    storage.commit(&chain.commit(vec![op], 1)).unwrap();
    assert_eq!(storage.journal_len(), 3);

    // A block that used sender 0's nonce 1 for another transfer, rolled back before it was
    // final: the slot is free again and the entry stays.
    let op = chain.apply(vec![transfer_of(&genesis, 0, 1, 2, 999).1]);
    storage.commit(&chain.commit(vec![op], 1)).unwrap();
    let rollback = chain.roll_back();
    let op = chain.apply(vec![]);
    storage.commit(&chain.commit(vec![rollback, op], 1)).unwrap();
    assert_eq!(storage.journal_len(), 3);

    // Finality jumps from 1 to the tip (6), over block 2 (sender 1's slot) and over blocks this
    // very commit applies: one holding sender 0's nonce 1.
    let first = chain.apply(vec![next_nonce.1.clone()]);
    let second = chain.apply(vec![]);
    let tip = chain.state.tip.height;
    storage.commit(&chain.commit(vec![first, second], tip)).unwrap();
    assert_eq!(storage.journal().unwrap(), vec![never_sent.clone()]);
    assert_eq!(storage.journal_len(), 1);
    drop(storage);

    let storage = Storage::open(&path, &genesis).unwrap();
    assert_eq!(storage.journal().unwrap(), vec![never_sent.clone()]);
    assert_eq!(storage.journal_len(), 1);

    // A journal smaller than the slots a final block used (the one-pass-over-the-journal way):
    // only the slot in the journal goes.
    let mut crowd: Vec<Transfer> = (4..12)
        .map(|sender| {
            let nonce = chain.state.account(&account_key(sender).address()).nonce;
            transfer_of(&genesis, sender, nonce, 0, 5).1
        })
        .collect();
    crowd.push(never_sent.1.clone());
    let op = chain.apply(crowd);
    storage.commit(&chain.commit(vec![op], tip)).unwrap();
    assert_eq!(storage.journal_len(), 1, "not final yet");
    let op = chain.apply(vec![]);
    storage.commit(&chain.commit(vec![op], tip + 1)).unwrap();
    assert_eq!((storage.journal().unwrap(), storage.journal_len()), (vec![], 0));

    // With the journal empty a commit that moves finality does no journal work and still works.
    let op = chain.apply(vec![]);
    storage.commit(&chain.commit(vec![op], tip + 2)).unwrap();
    assert_eq!(storage.finalized().unwrap(), chain.checkpoint(tip + 2));
}

fn dropped_record(id: Hash, transfer: &Transfer, reason: DropReason, tip_height: Height) -> DroppedTransfer {
    DroppedTransfer { id, transfer: transfer.clone(), reason, tip_height }
}

#[test]
fn dropped_transfers_are_recorded_overwritten_and_leave_the_journal() {
    let genesis = fast_genesis(1, 4);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let storage = Storage::create(&path, &genesis).unwrap();
    let (id, transfer) = transfer_of(&genesis, 0, 0, 1, 100);
    let (rival_id, rival) = transfer_of(&genesis, 0, 0, 1, 300);
    let (other_id, other) = transfer_of(&genesis, 2, 4, 1, 100);
    storage.journal_add(&[(id, transfer.clone()), (rival_id, rival.clone()), (other_id, other.clone())]).unwrap();
    assert_eq!(storage.dropped(&id).unwrap(), None);

    let replaced = dropped_record(id, &transfer, DropReason::Replaced { by: rival_id }, 3);
    storage.record_dropped(std::slice::from_ref(&replaced)).unwrap();
    assert_eq!(storage.dropped(&id).unwrap(), Some(replaced));
    assert_eq!(storage.journal().unwrap(), journal_order(&[(rival_id, rival.clone()), (other_id, other.clone())]));
    assert_eq!(storage.journal_len(), 2, "only the dropped id's entry goes, not its slot");

    // Recorded again: the new record replaces the old one.
    let unaffordable = dropped_record(id, &transfer, DropReason::Unaffordable, 9);
    let taken = dropped_record(other_id, &other, DropReason::NonceTaken { by: rival_id, height: 8 }, 9);
    storage.record_dropped(&[unaffordable.clone(), taken.clone()]).unwrap();
    assert_eq!(storage.dropped(&id).unwrap(), Some(unaffordable.clone()));
    assert_eq!(storage.dropped(&other_id).unwrap(), Some(taken.clone()));
    assert_eq!(storage.journal().unwrap(), vec![(rival_id, rival.clone())]);
    storage.record_dropped(&[]).unwrap();
    drop(storage);

    let storage = Storage::open(&path, &genesis).unwrap();
    assert_eq!(storage.dropped(&id).unwrap(), Some(unaffordable));
    assert_eq!(storage.dropped(&other_id).unwrap(), Some(taken));
    assert_eq!(storage.dropped(&rival_id).unwrap(), None);
    assert_eq!(storage.journal_len(), 1);
}

#[test]
fn committed_transfer_at_finds_who_used_a_nonce() {
    let genesis = fast_genesis(4, 4);
    let directory = tempfile::tempdir().unwrap();
    let storage = Storage::create(&directory.path().join("chain.redb"), &genesis).unwrap();
    let mut chain = ChainBuilder::new(&genesis);
    // Account 0 sends nonces 0..8, two per block in some blocks, and receives in between (so
    // its history mixes both sides, several entries per block).
    let mut expected = Vec::new();
    let mut received = 0;
    for nonce_pair in 0..4u64 {
        let first = transfer_of(&genesis, 0, nonce_pair * 2, 1, 100);
        let second = transfer_of(&genesis, 0, nonce_pair * 2 + 1, 0, 100);
        let incoming = transfer_of(&genesis, 2, received, 0, 50);
        received += 1;
        let op = chain.apply(vec![incoming.1, first.1]);
        let height = chain.state.tip.height;
        storage.commit(&chain.commit(vec![op], height.saturating_sub(2))).unwrap();
        expected.push((nonce_pair * 2, first.0, height));
        let op = chain.apply(vec![second.1, transfer_of(&genesis, 2, received, 0, 50).1]);
        received += 1;
        let height = chain.state.tip.height;
        storage.commit(&chain.commit(vec![op], height.saturating_sub(2))).unwrap();
        expected.push((nonce_pair * 2 + 1, second.0, height));
    }
    let sender = account_key(0).address();
    for (nonce, id, height) in expected {
        assert_eq!(storage.committed_transfer_at(&sender, nonce).unwrap(), Some((id, height)), "nonce {nonce}");
    }
    assert_eq!(storage.committed_transfer_at(&sender, 8).unwrap(), None, "the next nonce is unused");
    assert_eq!(storage.committed_transfer_at(&sender, u64::MAX).unwrap(), None);
    assert_eq!(storage.committed_transfer_at(&account_key(3).address(), 0).unwrap(), None, "never sent");
    assert_eq!(storage.committed_transfer_at(&account_key(1).address(), 0).unwrap(), None, "only received");
    assert_eq!(storage.committed_transfer_at(&Address([0xee; 32]), 0).unwrap(), None, "no account");
}

// ---- old schemas and damaged journal rows ------------------------------------------------------

const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");

fn stored_schema_version(path: &Path) -> u32 {
    let database = redb::Database::open(path).unwrap();
    let txn = database.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let bytes = meta.get("schema_version").unwrap().unwrap();
    tinychain_core::codec::decode("schema version", bytes.value()).unwrap()
}

/// Rewrites the stored schema version, as a database of another build would hold it.
fn write_schema_version(path: &Path, version: u32) {
    let database = redb::Database::open(path).unwrap();
    let txn = database.begin_write().unwrap();
    txn.open_table(META).unwrap().insert("schema_version", tinychain_core::codec::encode(&version).as_slice()).unwrap();
    txn.commit().unwrap();
}

/// Turns a database this build created into the version-1 layout: no journal or dropped
/// tables, schema version 1.
fn downgrade_to_version_1(path: &Path) {
    {
        let database = redb::Database::open(path).unwrap();
        let txn = database.begin_write().unwrap();
        assert!(txn.delete_table(redb::TableDefinition::<&[u8; 72], &[u8]>::new("journal")).unwrap());
        assert!(txn.delete_table(redb::TableDefinition::<&[u8; 32], &[u8]>::new("dropped")).unwrap());
        assert!(txn.delete_table(redb::TableDefinition::<u64, &[u8; 32]>::new("dropped_order")).unwrap());
        txn.commit().unwrap();
    }
    write_schema_version(path, 1);
}

/// Schema 3 came with evidence and jail, which changed every genesis hash: a database of
/// schema 1 or 2 holds a chain this build cannot join, so there is no upgrade. It is refused,
/// untouched, with an error that says what to do. (The test databases here are made by this
/// build with the version rewritten; a real old database also fails to decode its chain row,
/// which is why the version is checked first.)
#[test]
fn databases_of_schema_1_and_2_are_refused_unchanged_saying_what_to_do() {
    assert_eq!(SCHEMA_VERSION, 4);
    let genesis = fast_genesis(4, 4);
    let directory = tempfile::tempdir().unwrap();
    for version in [2u32, 1] {
        let path = directory.path().join(format!("chain-v{version}.redb"));
        let storage = Storage::create(&path, &genesis).unwrap();
        let mut chain = ChainBuilder::new(&genesis);
        let op = chain.apply(vec![transfer_of(&genesis, 0, 0, 1, 100).1]);
        storage.commit(&chain.commit(vec![op], 0)).unwrap();
        drop(storage);
        assert_eq!(stored_schema_version(&path), SCHEMA_VERSION, "create writes the current version");
        if version == 1 {
            downgrade_to_version_1(&path);
        } else {
            write_schema_version(&path, version);
        }
        let before = file_bytes(&path);
        let error = Storage::open(&path, &genesis).err().unwrap();
        assert!(matches!(error, StorageError::SchemaTooOld { found, .. } if found == version), "{error}");
        let message = error.to_string();
        for expected in [
            format!("schema version {version}"),
            "reads only version 4".to_string(),
            "genesis hash".to_string(),
            "left unchanged".to_string(),
            "tinychain init".to_string(),
            "tinychain genesis assemble".to_string(),
        ] {
            assert!(message.contains(&expected), "the error says {expected:?}: {message}");
        }
        assert!(file_bytes(&path) == before, "an old database is left as it was (version {version})");
    }
}

/// A database of schema 3 holds the same chain in the layout before the settled chunks; this
/// build does not convert it. It is refused, untouched, with an error that says how to move the
/// node over (a resync from its peers) and what to mind (the journal).
#[test]
fn a_database_of_schema_3_is_refused_unchanged_saying_how_to_resync() {
    let genesis = fast_genesis(4, 4);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    drop(Storage::create(&path, &genesis).unwrap());
    write_schema_version(&path, 3);
    let before = file_bytes(&path);
    let error = Storage::open(&path, &genesis).err().unwrap();
    assert!(matches!(error, StorageError::SchemaNeedsResync { found: 3, .. }), "{error}");
    let message = error.to_string();
    for expected in ["schema version 3", "reads only version 4", "left unchanged", "data directory", "syncs", "journal"]
    {
        assert!(message.contains(expected), "the error says {expected:?}: {message}");
    }
    assert!(file_bytes(&path) == before, "a version-3 database is left as it was");
}

#[test]
fn a_newer_schema_version_is_refused_and_unchanged() {
    let genesis = fast_genesis(1, 0);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    drop(Storage::create(&path, &genesis).unwrap());
    write_schema_version(&path, SCHEMA_VERSION + 1);
    let before = file_bytes(&path);
    let error = Storage::open(&path, &genesis).err().unwrap();
    assert!(matches!(error, StorageError::SchemaVersion { found: 5, .. }), "{error}");
    assert!(error.to_string().contains("reads only version 4"), "{error}");
    assert!(file_bytes(&path) == before, "a newer schema is left as it was");
    // Nor is version 0, which no build ever wrote.
    write_schema_version(&path, 0);
    let error = Storage::open(&path, &genesis).err().unwrap();
    assert!(matches!(error, StorageError::SchemaVersion { found: 0, .. }), "{error}");
}

#[test]
fn a_database_without_its_journal_is_corrupt() {
    let genesis = fast_genesis(1, 0);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    drop(Storage::create(&path, &genesis).unwrap());
    {
        let database = redb::Database::open(&path).unwrap();
        let txn = database.begin_write().unwrap();
        assert!(txn.delete_table(redb::TableDefinition::<&[u8; 72], &[u8]>::new("journal")).unwrap());
        txn.commit().unwrap();
    }
    let before = file_bytes(&path);
    let error = Storage::open(&path, &genesis).err().unwrap();
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    assert!(file_bytes(&path) == before, "a damaged database is left as it was");
}

#[test]
fn damaged_journal_and_dropped_rows_are_corrupt_naming_their_table() {
    let genesis = fast_genesis(1, 3);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let storage = Storage::create(&path, &genesis).unwrap();
    let (id, transfer) = transfer_of(&genesis, 0, 0, 1, 100);
    storage.record_dropped(&[dropped_record(id, &transfer, DropReason::Unaffordable, 0)]).unwrap();
    drop(storage);
    let journal_table = redb::TableDefinition::<&[u8; 72], &[u8]>::new("journal");
    let mut key = [0u8; 72];
    key[..32].copy_from_slice(&transfer.from.0);
    key[40..].copy_from_slice(&id.0);
    {
        let database = redb::Database::open(&path).unwrap();
        let txn = database.begin_write().unwrap();
        txn.open_table(journal_table).unwrap().insert(&key, [1u8, 2, 3].as_slice()).unwrap();
        let mut dropped = txn.open_table(redb::TableDefinition::<&[u8; 32], &[u8]>::new("dropped")).unwrap();
        dropped.insert(&id.0, [4u8, 5].as_slice()).unwrap();
        drop(dropped);
        txn.commit().unwrap();
    }
    let storage = Storage::open(&path, &genesis).unwrap();
    assert_eq!(storage.journal_len(), 1);
    let error = storage.journal().err().unwrap();
    assert!(matches!(error, StorageError::Corrupt { .. }) && error.to_string().contains("table journal"), "{error}");
    let error = storage.dropped(&id).err().unwrap();
    assert!(matches!(error, StorageError::Corrupt { .. }) && error.to_string().contains("table dropped"), "{error}");
    assert_eq!(storage.dropped(&Hash([9; 32])).unwrap(), None, "other rows still answer");
    drop(storage);

    // A journal row filed under another slot than its transfer's.
    {
        let database = redb::Database::open(&path).unwrap();
        let txn = database.begin_write().unwrap();
        let mut wrong_slot = key;
        wrong_slot[39] = 5;
        let mut journal = txn.open_table(journal_table).unwrap();
        journal.remove(&key).unwrap();
        journal.insert(&wrong_slot, tinychain_core::codec::encode(&transfer).as_slice()).unwrap();
        drop(journal);
        txn.commit().unwrap();
    }
    let storage = Storage::open(&path, &genesis).unwrap();
    let error = storage.journal().err().unwrap();
    assert!(matches!(error, StorageError::Corrupt { .. }) && error.to_string().contains("table journal"), "{error}");
    drop(storage);

    // A dropped row without its order row: refused at open, the file untouched.
    {
        let database = redb::Database::open(&path).unwrap();
        let txn = database.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<u64, &[u8; 32]>::new("dropped_order")).unwrap().pop_first().unwrap();
        txn.commit().unwrap();
    }
    let before = file_bytes(&path);
    let error = Storage::open(&path, &genesis).err().unwrap();
    assert!(matches!(error, StorageError::Corrupt { .. }) && error.to_string().contains("dropped_order"), "{error}");
    assert!(file_bytes(&path) == before);
}
