//! The redb StorageEngine against its reference model, `testkit::ModelStorage`: real nodes on a
//! lock-step network (with partitions that force reorganisations) feed every storage action to
//! both, and every question is asked of both. Then reopening, restarting a node from the
//! database, and the refusals of `create` and `open` (which must never change the file).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tinychain_core::crypto::SignatureCache;
use tinychain_core::election::rank_candidates;
use tinychain_core::genesis::Genesis;
use tinychain_core::mempool::MempoolConfig;
use tinychain_core::message::Message;
use tinychain_core::node::{Action, ChainOp, Event, Node, NodeConfig, Restored};
use tinychain_core::testkit::{account_key, fast_genesis, sign_transfer, validator_key, ModelStorage};
use tinychain_core::types::{Address, Hash, Height, Vote};
use tinychain_core::validate::{block_hash, transfer_id};
use tinychain_net::wire::PeerAddress;
use tinychain_node::storage::{Storage, StorageError, TxLocation};

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
    _directory: tempfile::TempDir,
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
    {
        let database = redb::Database::open(&path).unwrap();
        let txn = database.begin_write().unwrap();
        {
            let mut meta = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta")).unwrap();
            meta.insert("schema_version", tinychain_core::codec::encode(&99u32).as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
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
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| disk.storage().commit(&commit)));
    let debug_build = cfg!(debug_assertions);
    match outcome {
        Err(_) => assert!(debug_build, "only debug builds panic"),
        Ok(result) => {
            assert!(!debug_build, "debug builds panic");
            assert!(matches!(result, Err(StorageError::CommitMismatch { .. })), "{result:?}");
        }
    }
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
