// The tinychain explorer: one page that watches the node it came from through its public
// JSON-RPC (docs/rpc.md), the same calls any client makes, never an admin one.
//
// How it stays live without a reload: every POLL_INTERVAL_MS it asks `status`; only when the tip
// moved does it fetch the headers it does not hold yet (one JSON-RPC batch), the reports of the
// newest blocks, the committed elections of blocks a fallback made, and the live election; the
// mempool when its size or the tip changed; the peers every few seconds. Heights, colours and
// ages are recomputed from those answers at each render.
//
// Everything the node says is written into the page as text (textContent, attribute values),
// never as HTML: a validator's name comes from the genesis file and is not trusted here.
//
// The page keeps stable hooks for tests and scripts: data-tip-height, data-justified-height,
// data-final-height on the three height cards; rows with data-height in #block-list and cells
// with data-height/data-state in #block-strip; rows with data-node-id, data-rank, data-score,
// data-produced-in-window, data-eligible-at-ms, data-jailed-until and data-demotion in #election
// (which carries data-height and data-parent-hash); #detail with data-kind (block, transfer,
// account, not-found, error), data-id and data-status; body[data-ready] after the first render.
"use strict";

const POLL_INTERVAL_MS = 1000;
/** Polling slows down while the tab is hidden. */
const HIDDEN_POLL_INTERVAL_MS = 5000;
/** Blocks in the coloured strip, and so the window of headers the page keeps. */
const STRIP_BLOCKS = 60;
/** Rows in the block list (the newest ones). */
const LIST_BLOCKS = 25;
/** Calls in one JSON-RPC batch; the node takes at most 50. */
const BATCH_CALLS_MAX = 40;
/** The newest blocks whose reports are read at each new tip (cpu, net and report age). */
const REPORT_SCAN_BLOCKS = 6;
/** A block with more transfers than this is not fetched whole just for its reports. */
const REPORT_SCAN_TRANSFERS_MAX = 500;
const PEERS_REFRESH_MS = 5000;
const MEMPOOL_REFRESH_MS = 5000;
const MEMPOOL_SHOWN = 20;
const HISTORY_SHOWN = 50;
/** Transfers listed on a block's page (a full block holds 10,000). */
const BLOCK_TRANSFERS_SHOWN = 1000;
const UNITS_PER_COIN = 100000000n;

// ---- JSON-RPC ------------------------------------------------------------------------------

/** The page's own URL on its own origin: the node answers JSON-RPC there. */
const ENDPOINT = window.location.pathname;

class RpcError extends Error {
  constructor(error) {
    super(error && error.message ? error.message : "the node answered an error");
    this.code = error && error.code;
    this.dataCode = error && error.data && error.data.code;
  }
}

let nextRequestId = 1;

async function post(body) {
  const response = await fetch(ENDPOINT, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    cache: "no-store",
  });
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch (_) {
    throw new Error(`HTTP ${response.status}: ${text.slice(0, 120)}`);
  }
}

function request(method, params) {
  const call = { jsonrpc: "2.0", id: nextRequestId++, method };
  if (params !== undefined) call.params = params;
  return call;
}

/** One call: its result, or an RpcError. */
async function rpc(method, params) {
  const answer = await post(request(method, params));
  if (answer.error) throw new RpcError(answer.error);
  return answer.result;
}

/** Many calls as JSON-RPC batches: `[{result} | {error}]` in the order asked. */
async function rpcBatch(calls) {
  const answers = [];
  for (let start = 0; start < calls.length; start += BATCH_CALLS_MAX) {
    const requests = calls.slice(start, start + BATCH_CALLS_MAX).map(([method, params]) => request(method, params));
    const answer = await post(requests);
    if (!Array.isArray(answer)) throw new RpcError(answer.error);
    const byId = new Map(answer.map((item) => [item.id, item]));
    for (const sent of requests) {
      const item = byId.get(sent.id);
      answers.push(item || { error: { message: "the batch answer lacks this call" } });
    }
  }
  return answers;
}

// ---- What the page knows -------------------------------------------------------------------

const chain = {
  /** The latest `status` answer. */
  status: null,
  /** The tip hash the blocks and the election were last fetched at in full (a failed round
   * leaves it behind, so the next round fetches again). */
  loadedAtTip: null,
  /** height -> `get_header` answer, on the chain whose tip `status` named. */
  headers: new Map(),
  /** height -> committed `get_election(height)`, fetched for blocks made at rank > 0. */
  committedElections: new Map(),
  /** node id -> { report, height }: the latest report of each validator in the blocks read. */
  latestReports: new Map(),
  /** Hashes of the blocks whose reports were read. */
  reportsRead: new Set(),
  /** The live election (`get_election` with no height) and the tip hash it was asked at. */
  election: null,
  electionAtTip: null,
  peers: null,
  peersFetchedAt: 0,
  mempool: null,
  mempoolFetchedAt: 0,
  mempoolKey: "",
  /** Heights that arrived in the last refresh (drawn with a short animation). */
  arrived: new Set(),
  /** Node id -> genesis name, from every answer that names one. */
  names: new Map(),
  lastUpdateMs: 0,
};

function learnName(nodeId, name) {
  if (nodeId && name) chain.names.set(nodeId, name);
}

function nameOf(nodeId) {
  return chain.names.get(nodeId) || shortId(nodeId);
}

// ---- Polling -------------------------------------------------------------------------------

/** One round: `status`, then whatever changed; then the next round is scheduled. */
async function poll() {
  try {
    const status = await rpc("status");
    const previous = chain.status;
    chain.status = status;
    learnName(status.node_id, status.name);
    const tipMoved = chain.loadedAtTip !== status.tip.hash;
    const now = Date.now();
    const work = [];
    if (tipMoved) {
      const isFirstLoad = chain.loadedAtTip === null;
      work.push(
        refreshBlocks(status, isFirstLoad)
          .then(refreshElection)
          .then(() => {
            chain.loadedAtTip = status.tip.hash;
          }),
      );
    }
    const mempoolKey = `${status.mempool_size}/${status.tip.hash}`;
    if (mempoolKey !== chain.mempoolKey || now - chain.mempoolFetchedAt > MEMPOOL_REFRESH_MS) {
      work.push(refreshMempool(mempoolKey));
    }
    if (!previous || previous.peers !== status.peers || now - chain.peersFetchedAt > PEERS_REFRESH_MS) {
      work.push(refreshPeers());
    }
    await Promise.all(work);
    chain.lastUpdateMs = Date.now();
    render();
    if (tipMoved && view.refreshOnNewTip) showRoute();
    setConnection(true);
  } catch (error) {
    setConnection(false, error);
  } finally {
    window.setTimeout(poll, document.hidden ? HIDDEN_POLL_INTERVAL_MS : POLL_INTERVAL_MS);
  }
}

/** The lowest height the strip shows for this tip. */
function lowestShown(tip) {
  return Math.max(0, tip - STRIP_BLOCKS + 1);
}

/** Fetches the headers of the window that the page lacks, and what goes with new blocks. */
async function refreshBlocks(status, isFirstLoad) {
  const tip = status.tip.height;
  const lowest = lowestShown(tip);
  for (const height of [...chain.headers.keys()]) {
    if (height > tip || height < lowest - 1) chain.headers.delete(height);
  }
  const held = chain.headers.get(tip);
  if (held && held.hash !== status.tip.hash) forgetAbove(status.finalized.height);
  let fetched = await fetchMissingHeaders(lowest, tip);
  if (!isLinked(lowest, tip)) {
    // A reorganisation happened between two answers: blocks above the final one may have changed.
    forgetAbove(status.finalized.height);
    fetched = fetched.concat(await fetchMissingHeaders(lowest, tip));
  }
  chain.arrived = new Set(isFirstLoad ? [] : fetched);
  await readNewBlocks(fetched);
}

function forgetAbove(height) {
  for (const held of [...chain.headers.keys()]) {
    if (held > height) chain.headers.delete(held);
  }
}

/** Heights fetched (the parent of the lowest shown too, for its interval). */
async function fetchMissingHeaders(lowest, tip) {
  const missing = [];
  for (let height = Math.max(0, lowest - 1); height <= tip; height++) {
    if (!chain.headers.has(height)) missing.push(height);
  }
  if (missing.length === 0) return [];
  const answers = await rpcBatch(missing.map((height) => ["get_header", { height }]));
  const fetched = [];
  answers.forEach((answer, index) => {
    if (!answer.result) return; // Pruned away or not there any more: the next tip retries.
    chain.headers.set(missing[index], answer.result);
    learnName(answer.result.producer, answer.result.producer_name);
    fetched.push(missing[index]);
  });
  return fetched;
}

/** Whether every held header of the window names its held parent. */
function isLinked(lowest, tip) {
  for (let height = lowest + 1; height <= tip; height++) {
    const header = chain.headers.get(height);
    const parent = chain.headers.get(height - 1);
    if (header && parent && header.prev_hash !== parent.hash) return false;
  }
  return true;
}

/** For new blocks: who missed their turn (blocks at rank > 0) and the reports they record. */
async function readNewBlocks(heights) {
  const newest = [...heights].sort((a, b) => b - a);
  const calls = [];
  for (const height of newest) {
    const header = chain.headers.get(height);
    if (header && header.rank > 0 && !chain.committedElections.has(height)) {
      calls.push(["get_election", { height }]);
    }
  }
  const toRead = newest
    .map((height) => chain.headers.get(height))
    .filter((header) => header && !chain.reportsRead.has(header.hash))
    .filter((header) => header.report_count > 0 && header.transfer_count <= REPORT_SCAN_TRANSFERS_MAX)
    .slice(0, REPORT_SCAN_BLOCKS);
  for (const header of toRead) calls.push(["get_block", { hash: header.hash }]);
  if (calls.length === 0) return;
  const answers = await rpcBatch(calls);
  answers.forEach((answer, index) => {
    const [method] = calls[index];
    if (!answer.result) return;
    if (method === "get_election") {
      chain.committedElections.set(answer.result.height, answer.result);
      for (const candidate of answer.result.candidates) learnName(candidate.node_id, candidate.name);
    } else {
      readReports(answer.result);
    }
  });
  const lowest = chain.status ? lowestShown(chain.status.tip.height) : 0;
  for (const height of [...chain.committedElections.keys()]) {
    if (height < lowest) chain.committedElections.delete(height);
  }
}

function readReports(block) {
  chain.reportsRead.add(block.hash);
  if (chain.reportsRead.size > 4 * STRIP_BLOCKS) chain.reportsRead.clear();
  for (const report of block.reports) {
    const held = chain.latestReports.get(report.node);
    if (!held || held.report.sequence < report.sequence) {
      chain.latestReports.set(report.node, { report, height: block.height });
    }
  }
}

async function refreshElection() {
  const status = chain.status;
  const election = await rpc("get_election", {});
  chain.election = election;
  chain.electionAtTip = status.tip.hash;
  for (const candidate of election.candidates) learnName(candidate.node_id, candidate.name);
}

async function refreshPeers() {
  chain.peers = await rpc("get_peers");
  chain.peersFetchedAt = Date.now();
  for (const peer of chain.peers.connected) learnName(peer.node_id, peer.name);
  for (const peer of chain.peers.validators_not_connected) learnName(peer.node_id, peer.name);
}

async function refreshMempool(key) {
  chain.mempool = await rpc("get_mempool", { limit: MEMPOOL_SHOWN });
  chain.mempoolFetchedAt = Date.now();
  chain.mempoolKey = key;
}

function setConnection(isConnected, error) {
  const badge = byId("connection");
  badge.dataset.connected = String(isConnected);
  if (isConnected) {
    badge.textContent = `live · ${clockTime(chain.lastUpdateMs)}`;
    badge.title = "updated about once a second";
  } else {
    const busy = error instanceof RpcError && error.dataCode === "busy";
    badge.textContent = busy ? "node busy, retrying" : "cannot reach the node, retrying";
    badge.title = error && error.message ? error.message : "";
  }
}

// ---- Rendering the chain -------------------------------------------------------------------

function render() {
  const status = chain.status;
  if (!status) return;
  renderHeights(status);
  renderStrip(status);
  renderBlockList(status);
  renderElection(status);
  renderPeers();
  renderMempool(status);
  document.body.dataset.ready = "true";
}

/** "final", "justified" or "pending" for a height of the current chain. */
function blockState(height) {
  const status = chain.status;
  if (height <= status.finalized.height) return "final";
  if (height <= status.justified.height) return "justified";
  return "pending";
}

const STATE_WORDS = { final: "final", justified: "justified", pending: "not yet" };

function renderHeights(status) {
  document.title = `#${status.tip.height} · tinychain explorer`;
  setText("node-name", status.name || shortId(status.node_id));
  setText("chain-id", status.chain_id);
  setText("node-version", `v${status.version}`);
  const tip = byId("tip-height");
  tip.textContent = String(status.tip.height);
  tip.dataset.tipHeight = String(status.tip.height);
  tip.dataset.tipHash = status.tip.hash;
  setText("tip-age", `${ago(status.tip.timestamp_ms)} · ${shortId(status.tip.hash)}`);
  const justified = byId("justified-height");
  justified.textContent = String(status.justified.height);
  justified.dataset.justifiedHeight = String(status.justified.height);
  const final = byId("final-height");
  final.textContent = String(status.finalized.height);
  final.dataset.finalHeight = String(status.finalized.height);
  const next = status.next_producer;
  setText("next-producer", next ? next.name || shortId(next.node_id) : "—");
  setText("next-producer-note", next ? `for #${status.tip.height + 1}, ${until(next.eligible_at_ms)}` : "");
  setText("peer-count", String(status.peers));
  setText("sync-state", status.syncing ? "syncing" : "in sync");
  setText("mempool-count", String(status.mempool_size));

  const alerts = [];
  for (const jailed of status.jailed_validators) {
    alerts.push(`${jailed.name || shortId(jailed.node_id)} is jailed up to block #${jailed.until_height}: it signed two conflicting objects (see its evidence).`);
  }
  if (status.evidence_pending > 0) {
    alerts.push(`${status.evidence_pending} piece(s) of evidence not yet committed on this node's chain.`);
  }
  if (!status.mempool_synced) alerts.push("This node has not finished its first mempool sync since it started.");
  replaceChildren(byId("alerts"), alerts.map((text) => el("div", { class: "alert" }, text)));
}

function renderStrip(status) {
  const cells = [];
  for (let height = lowestShown(status.tip.height); height <= status.tip.height; height++) {
    const header = chain.headers.get(height);
    const state = blockState(height);
    const title = header
      ? `#${height} · ${nameOf(header.producer)} · rank ${header.rank} · ${header.transfer_count} transfers · ${STATE_WORDS[state]}`
      : `#${height} · ${STATE_WORDS[state]}`;
    cells.push(
      el("a", {
        class: chain.arrived.has(height) ? "cell new" : "cell",
        href: `#/block/${height}`,
        role: "listitem",
        title,
        "aria-label": title,
        "data-height": height,
        "data-state": state,
        "data-rank": header ? header.rank : null,
      }),
    );
  }
  replaceChildren(byId("block-strip"), cells);
}

function renderBlockList(status) {
  const rows = [];
  const lowest = Math.max(0, status.tip.height - LIST_BLOCKS + 1);
  for (let height = status.tip.height; height >= lowest; height--) {
    const header = chain.headers.get(height);
    if (!header) continue;
    const parent = chain.headers.get(height - 1);
    const interval = parent ? header.timestamp_ms - parent.timestamp_ms : null;
    const state = blockState(height);
    rows.push(
      el(
        "tr",
        { class: chain.arrived.has(height) ? "new-row" : null, "data-height": height, "data-hash": header.hash },
        el("td", { class: "num" }, link(`#/block/${height}`, `#${height}`)),
        el("td", { title: header.producer }, height === 0 ? "genesis" : nameOf(header.producer)),
        el("td", { class: "num" }, header.rank > 0 ? badge(String(header.rank), "warn", missedTitle(height)) : "0"),
        el("td", { class: "num" }, String(header.transfer_count)),
        el("td", { class: "num" }, interval === null ? "—" : seconds(interval)),
        el("td", {}, badge(STATE_WORDS[state], state)),
      ),
    );
  }
  replaceChildren(byId("block-list").tBodies[0], rows);
}

/** Who missed their turn before a fallback's block, when the page fetched that election. */
function missedTitle(height) {
  const election = chain.committedElections.get(height);
  if (!election) return "a validator ranked before it missed its turn";
  return `missed their turn: ${election.missed_turn.map((missed) => missed.name || shortId(missed.node_id)).join(", ")}`;
}

/** Turns each validator missed among the committed elections the page holds. */
function missedTurnCounts() {
  const counts = new Map();
  for (const election of chain.committedElections.values()) {
    for (const missed of election.missed_turn) counts.set(missed.node_id, (counts.get(missed.node_id) || 0) + 1);
  }
  return counts;
}

const DEMOTION_WORDS = {
  no_report: () => "no report",
  stale_report: (demotion) => `stale report (tip #${demotion.tip_height})`,
  missed_turn: (demotion) => `missed turn at #${demotion.at_height}`,
  production_cap: (demotion) => `at its cap (${demotion.produced} of ${demotion.cap})`,
  jailed: (demotion) => `jailed to #${demotion.until_height}`,
};

function demotionWords(demotion) {
  const words = DEMOTION_WORDS[demotion.reason];
  return words ? words(demotion) : demotion.reason;
}

function renderElection(status) {
  const election = chain.election;
  const table = byId("election");
  if (!election) return;
  table.dataset.height = String(election.height);
  table.dataset.parentHash = election.parent.hash;
  setText("election-height", `#${election.height}`);
  const parentHeader = chain.headers.get(election.parent.height);
  const parentTimestamp = parentHeader && parentHeader.hash === election.parent.hash ? parentHeader.timestamp_ms : null;
  const missed = missedTurnCounts();
  const rows = election.candidates.map((candidate) => {
    const seen = chain.latestReports.get(candidate.node_id);
    let reportAge = "—";
    let reportTitle = "no report in the blocks this page read";
    if (seen) {
      reportAge = blocks(Math.max(0, election.parent.height - seen.report.tip.height));
      reportTitle = `its report #${seen.report.sequence} about tip #${seen.report.tip.height}, recorded in block #${seen.height}`;
    } else if (candidate.demotion && candidate.demotion.reason === "stale_report") {
      reportAge = blocks(election.parent.height - candidate.demotion.tip_height);
    }
    const share = Math.round((100 * candidate.produced_in_window) / Math.max(1, election.production_window_blocks));
    const produced = election.production_cap_blocks === null
      ? `${candidate.produced_in_window} (${share}%)`
      : `${candidate.produced_in_window} / cap ${election.production_cap_blocks}`;
    const eligible = parentTimestamp === null
      ? clockTime(candidate.eligible_at_ms)
      : `+${seconds(candidate.eligible_at_ms - parentTimestamp)}`;
    const standing = candidate.demotion
      ? badge(demotionWords(candidate.demotion), candidate.demotion.reason === "jailed" ? "bad" : "warn")
      : badge("active", "ok");
    const missedCount = missed.get(candidate.node_id) || 0;
    return el(
      "tr",
      {
        class: candidate.rank === 0 ? "producer-row" : null,
        "data-node-id": candidate.node_id,
        "data-rank": candidate.rank,
        "data-score": candidate.score === null ? "" : candidate.score,
        "data-produced-in-window": candidate.produced_in_window,
        "data-eligible-at-ms": candidate.eligible_at_ms,
        "data-jailed-until": candidate.jailed_until === null ? "" : candidate.jailed_until,
        "data-demotion": candidate.demotion ? candidate.demotion.reason : "",
      },
      el("td", { class: "num rank" }, String(candidate.rank)),
      el("td", { class: "name", title: candidate.node_id }, candidate.name || shortId(candidate.node_id)),
      el("td", { class: "num score" }, candidate.score === null ? "—" : String(candidate.score)),
      el("td", { class: "num", title: reportTitle }, seen ? String(seen.report.cpu) : "—"),
      el("td", { class: "num", title: reportTitle }, seen ? String(seen.report.net) : "—"),
      el("td", { class: "num", title: reportTitle }, reportAge),
      el("td", { class: "num" }, String(missedCount)),
      el("td", {}, candidate.jailed_until === null ? "—" : `to #${candidate.jailed_until}`),
      el("td", { class: "num", title: `of the last ${election.production_window_blocks} blocks` }, produced),
      el("td", { class: "num", title: new Date(candidate.eligible_at_ms).toISOString() }, eligible),
      el("td", {}, standing),
    );
  });
  replaceChildren(table.tBodies[0], rows);
  setText("election-why", whyThisProducer(election, parentTimestamp));
  setText(
    "election-note",
    `Score, jail, production and eligibility: get_election for #${election.height}, on parent ${shortId(election.parent.hash)}. ` +
      `cpu, net and report age: each validator's latest report in the last blocks this page read; ` +
      `missed: turns missed among the ${chain.headers.size} blocks it holds. Active validators rank by committed score, ` +
      "lowest first (ties by a hash of the parent and the validator); demoted ones follow, jailed ones last.",
  );
}

function whyThisProducer(election, parentTimestamp) {
  const [first, second] = election.candidates;
  if (!first) return "";
  const name = first.name || shortId(first.node_id);
  const active = election.candidates.filter((candidate) => !candidate.demotion).length;
  const at = (candidate) =>
    parentTimestamp === null
      ? clockTime(candidate.eligible_at_ms)
      : `${seconds(candidate.eligible_at_ms - parentTimestamp)} after its parent`;
  let why;
  if (first.demotion) {
    why = `${name} is first although demoted (${demotionWords(first.demotion)}): every validator is demoted, so the tie-break hash orders them.`;
  } else if (active === 1) {
    why = `${name} is first: it is the only active validator (score ${first.score}).`;
  } else {
    why = `${name} is first: the lowest committed score (${first.score}) of the ${active} active validators.`;
  }
  why += ` It may make block #${election.height} from ${at(first)}`;
  if (second) why += `; if it has not by ${at(second)}, ${second.name || shortId(second.node_id)} (rank 1) may`;
  return `${why}.`;
}

function renderPeers() {
  const peers = chain.peers;
  if (!peers) return;
  const rows = [];
  for (const peer of peers.connected) {
    rows.push(
      el(
        "tr",
        { "data-node-id": peer.node_id, "data-connected": "true" },
        el("td", { title: peer.node_id }, peer.name || shortId(peer.node_id)),
        el("td", { class: "mono" }, peer.addr || "—"),
        el("td", { class: "num" }, peer.tip ? link(`#/block/${peer.tip.hash}`, `#${peer.tip.height}`) : "—"),
        el("td", {}, badge("connected", "ok")),
      ),
    );
  }
  for (const validator of peers.validators_not_connected) {
    rows.push(
      el(
        "tr",
        { "data-node-id": validator.node_id, "data-connected": "false" },
        el("td", { title: validator.node_id }, validator.name),
        el("td", { class: "mono" }, validator.addr),
        el("td", { class: "num" }, "—"),
        el("td", {}, badge("not connected", "bad")),
      ),
    );
  }
  if (rows.length === 0) rows.push(emptyRow(4, "no other validator"));
  replaceChildren(byId("peers").tBodies[0], rows);
}

function renderMempool(status) {
  const mempool = chain.mempool;
  if (!mempool) return;
  setText(
    "mempool-summary",
    mempool.count === 0
      ? "No transfer is waiting."
      : `${mempool.count} transfer(s) waiting; ${Math.min(mempool.count, MEMPOOL_SHOWN)} with the highest fees shown.`,
  );
  const rows = mempool.transfers.map(transferRow);
  if (rows.length === 0) rows.push(emptyRow(6, "empty"));
  replaceChildren(byId("mempool").tBodies[0], rows);
}

// ---- The detail view: a block, a transfer, an account --------------------------------------

const view = {
  /** Reload the open detail at each new tip (its state may still change). */
  refreshOnNewTip: false,
  /** Bumped at each navigation so a late answer for an older route is dropped. */
  generation: 0,
};

function showRoute() {
  const route = window.location.hash.replace(/^#\/?/, "");
  const [kind, ...rest] = route.split("/");
  const argument = decodeURIComponent(rest.join("/"));
  const generation = ++view.generation;
  const detail = byId("detail");
  if (!kind || !argument) {
    detail.hidden = true;
    view.refreshOnNewTip = false;
    delete detail.dataset.kind;
    delete detail.dataset.id;
    return;
  }
  const loaders = { block: showBlock, tx: showTransfer, account: showAccount, find: findAndShow };
  const loader = loaders[kind];
  if (!loader) return showDetail(generation, "error", argument, [el("p", {}, `Nothing to show for "${route}".`)]);
  loader(argument, generation).catch((error) => {
    const notFound = error instanceof RpcError && error.dataCode === "not_found";
    showDetail(generation, notFound ? "not-found" : "error", argument, [
      el("h2", {}, notFound ? "Not found" : "The node could not answer"),
      el("p", {}, error.message),
    ]);
  });
}

/** Puts a finished view in place, unless the user has gone elsewhere meanwhile. */
function showDetail(generation, kind, id, children, status) {
  if (generation !== view.generation) return;
  const detail = byId("detail");
  const isNewView = detail.dataset.kind !== kind || detail.dataset.id !== id;
  detail.dataset.kind = kind;
  detail.dataset.id = id;
  if (status) detail.dataset.status = status;
  else delete detail.dataset.status;
  replaceChildren(byId("detail-body"), children);
  detail.hidden = false;
  if (isNewView) detail.scrollIntoView({ block: "nearest" });
}

async function showBlock(argument, generation) {
  const selector = /^\d+$/.test(argument) ? { height: Number(argument) } : { hash: argument.toLowerCase() };
  const block = await rpc("get_block", selector);
  learnName(block.producer, block.producer_name);
  const state = block.final ? "final" : chain.status && block.height <= chain.status.justified.height ? "justified" : "pending";
  view.refreshOnNewTip = !block.final;
  const parts = [
    el("h2", {}, `Block #${block.height} `, badge(STATE_WORDS[state], state)),
    facts([
      ["hash", el("span", { class: "mono" }, block.hash)],
      ["parent", block.height > 0 ? link(`#/block/${block.prev_hash}`, block.prev_hash, "mono") : block.prev_hash],
      ["time", `${new Date(block.timestamp_ms).toISOString()} (${ago(block.timestamp_ms)})`],
      ["producer", el("span", {}, `${block.producer_name || ""} `, accountLink(block.producer, block.producer))],
      ["rank", block.rank > 0 ? `${block.rank} (a fallback: a validator ranked before it missed its turn)` : "0"],
      ["confirmations", String(block.confirmations)],
      ["transfers · reports · evidence", `${block.transfer_count} · ${block.report_count} · ${block.evidence_count}`],
      ["state root", el("span", { class: "mono" }, block.state_root)],
      ["transfer root", el("span", { class: "mono" }, block.tx_root)],
    ]),
    el("h3", {}, `Transfers (${block.transfer_count})`),
    transfersTable(block.transfers.slice(0, BLOCK_TRANSFERS_SHOWN)),
    block.transfers.length > BLOCK_TRANSFERS_SHOWN
      ? el("p", { class: "muted" }, `The first ${BLOCK_TRANSFERS_SHOWN} of ${block.transfers.length} are listed; look any transfer up by its id.`)
      : null,
    el("h3", {}, `Reports and their votes (${block.report_count})`),
    reportsTable(block.reports),
    el("h3", {}, `Evidence (${block.evidence_count})`),
    ...evidenceList(block.evidence),
  ];
  showDetail(generation, "block", argument, parts, state);
}

/** One transfer as a table row: id, from, to, amount, fee, nonce. */
function transferRow(transfer) {
  return el(
    "tr",
    { "data-id": transfer.id },
    el("td", { class: "mono" }, link(`#/tx/${transfer.id}`, shortId(transfer.id))),
    el("td", { class: "mono" }, accountLink(transfer.from)),
    el("td", { class: "mono" }, accountLink(transfer.to)),
    el("td", { class: "num" }, coins(transfer.amount)),
    el("td", { class: "num" }, coins(transfer.fee)),
    el("td", { class: "num" }, String(transfer.nonce)),
  );
}

function transfersTable(transfers) {
  const rows = transfers.map(transferRow);
  if (rows.length === 0) rows.push(emptyRow(6, "none"));
  return table(["transfer", "from", "to", "amount", "fee", "nonce"], rows);
}

function checkpointText(checkpoint) {
  return `#${checkpoint.height} ${shortId(checkpoint.hash)}`;
}

function reportsTable(reports) {
  const rows = reports.map((report) =>
    el(
      "tr",
      { "data-node-id": report.node },
      el("td", { title: report.node }, nameOf(report.node)),
      el("td", { class: "num" }, String(report.sequence)),
      el("td", {}, link(`#/block/${report.tip.hash}`, `#${report.tip.height}`)),
      el("td", { class: "num" }, String(report.cpu)),
      el("td", { class: "num" }, String(report.net)),
      el("td", { class: "num" }, String(report.score)),
      el("td", {}, report.vote ? `${checkpointText(report.vote.source)} → ${checkpointText(report.vote.target)}` : "no vote"),
    ),
  );
  if (rows.length === 0) rows.push(emptyRow(7, "none"));
  return table(["validator", "sequence", "its tip", "cpu ‰", "net ‰", "score", "vote (source → target)"], rows);
}

const EVIDENCE_WORDS = {
  double_production: "made two different blocks on one parent",
  double_vote: "cast two votes with the same target height",
  surround_vote: "cast a vote surrounding another of its votes",
};

function evidenceList(evidence) {
  if (evidence.length === 0) return [el("p", { class: "empty" }, "none")];
  return evidence.map((piece) => {
    const [firstLabel, secondLabel] = piece.kind === "surround_vote" ? ["outer", "inner"] : ["first", "second"];
    return el(
      "div",
      { class: "evidence", "data-id": piece.id },
      el("p", {}, badge(piece.kind.replace(/_/g, " "), "bad"), ` ${piece.offender_name || shortId(piece.offender)} ${EVIDENCE_WORDS[piece.kind] || ""} at height ${piece.offence_height}`),
      facts([
        ["evidence id", el("span", { class: "mono" }, piece.id)],
        ["offender", accountLink(piece.offender, piece.offender)],
        [firstLabel, evidenceObject(piece[firstLabel])],
        [secondLabel, evidenceObject(piece[secondLabel])],
      ]),
    );
  });
}

function evidenceObject(object) {
  if (!object) return "—";
  if (object.block_hash) {
    return el("span", { class: "mono" }, `header #${object.height} ${shortId(object.block_hash)} on parent ${shortId(object.prev_hash)}, ${new Date(object.timestamp_ms).toISOString()}`);
  }
  const vote = object.vote ? `${checkpointText(object.vote.source)} → ${checkpointText(object.vote.target)}` : "no vote";
  return el("span", { class: "mono" }, `report ${shortId(object.report_id)} #${object.sequence}: ${vote}`);
}

const TX_STATE_CLASS = { final: "final", committed: "justified", pending: "pending", dropped: "bad", unknown: "pending" };

async function showTransfer(id, generation) {
  const answer = await rpc("get_tx", { id: id.toLowerCase() });
  view.refreshOnNewTip = answer.status !== "final" && answer.status !== "dropped";
  if (answer.status === "unknown") {
    showDetail(generation, "not-found", id, [
      el("h2", {}, "Transfer not known"),
      el("p", {}, `This node has no transfer ${id}: not in a block, not pending, not dropped.`),
    ], "unknown");
    return;
  }
  const transfer = answer.transfer;
  const rows = [["id", el("span", { class: "mono" }, answer.id)]];
  if (answer.height !== undefined) {
    rows.push(["block", link(`#/block/${answer.height}`, `#${answer.height}`), ]);
    rows.push(["position", `transfer ${answer.index} of the block, ${answer.confirmations} confirmation(s)`]);
  }
  if (answer.status === "dropped") {
    rows.push(["dropped", `${answer.reason}: ${answer.message}`]);
    if (answer.by) rows.push(["instead", link(`#/tx/${answer.by}`, answer.by, "mono")]);
  }
  if (transfer) {
    rows.push(["from", accountLink(transfer.from, transfer.from)]);
    rows.push(["to", accountLink(transfer.to, transfer.to)]);
    rows.push(["amount", coins(transfer.amount)]);
    rows.push(["fee", coins(transfer.fee)]);
    rows.push(["nonce", String(transfer.nonce)]);
  }
  showDetail(generation, "transfer", id, [
    el("h2", {}, "Transfer ", badge(answer.status, TX_STATE_CLASS[answer.status] || "pending")),
    facts(rows),
  ], answer.status);
}

async function showAccount(address, generation) {
  const [tip, final, history] = await rpcBatch([
    ["get_account", { address, at: "tip" }],
    ["get_account", { address, at: "final" }],
    ["get_history", { address, limit: HISTORY_SHOWN }],
  ]);
  for (const answer of [tip, final, history]) if (answer.error) throw new RpcError(answer.error);
  const account = tip.result;
  view.refreshOnNewTip = true;
  const name = chain.names.get(account.address);
  const entries = [...history.result.pending.map((entry) => ({ ...entry, pending: true })), ...history.result.transfers];
  const rows = entries.map((entry) =>
    el(
      "tr",
      { "data-id": entry.id },
      el("td", { class: "mono" }, link(`#/tx/${entry.id}`, shortId(entry.id))),
      el("td", {}, entry.pending ? badge("pending", "pending") : link(`#/block/${entry.height}`, `#${entry.height}`)),
      el("td", {}, entry.direction),
      el("td", { class: "mono" }, accountLink(entry.counterparty)),
      el("td", { class: "num" }, coins(entry.amount)),
      el("td", { class: "num" }, coins(entry.fee)),
      el("td", { class: "num" }, String(entry.nonce)),
    ),
  );
  if (rows.length === 0) rows.push(emptyRow(7, "no transfer yet"));
  showDetail(generation, "account", address, [
    el("h2", {}, name ? `Account of ${name}` : "Account"),
    facts([
      ["address", el("span", { class: "mono" }, account.address)],
      ["balance at the tip", `${coins(account.balance)} (block #${account.height})`],
      ["final balance", `${coins(final.result.balance)} (block #${final.result.height})`],
      ["nonce", String(account.nonce)],
      ["next nonce", account.pending_nonce === null ? "not known yet (mempool sync)" : String(account.pending_nonce)],
    ]),
    el("h3", {}, `Latest transfers (up to ${HISTORY_SHOWN}, pending first)`),
    table(["transfer", "block", "direction", "counterparty", "amount", "fee", "nonce"], rows),
  ]);
}

/** The lookup box: a height, an address, or 64 hex (a transfer id, else a block hash). */
async function findAndShow(query, generation) {
  const text = query.trim();
  if (/^\d+$/.test(text)) return go(`#/block/${text}`);
  if (/^tc1[0-9a-z]+$/i.test(text)) return go(`#/account/${text.toLowerCase()}`);
  if (/^[0-9a-f]{64}$/i.test(text)) {
    const id = text.toLowerCase();
    const transfer = await rpc("get_tx", { id });
    if (transfer.status !== "unknown") return go(`#/tx/${id}`);
    try {
      await rpc("get_header", { hash: id });
      return go(`#/block/${id}`);
    } catch (error) {
      if (!(error instanceof RpcError && error.dataCode === "not_found")) throw error;
    }
    return showDetail(generation, "not-found", text, [
      el("h2", {}, "Not found"),
      el("p", {}, `No transfer and no block of this chain has the id ${id}.`),
    ]);
  }
  showDetail(generation, "not-found", text, [
    el("h2", {}, "Not an address, an id or a height"),
    el("p", {}, "Look up an address (tc1…), a transfer id or block hash (64 hex digits), or a block height."),
  ]);
}

/** Replaces the location's hash (so the back button skips the lookup step) and shows it. */
function go(hash) {
  window.history.replaceState(null, "", hash);
  showRoute();
}

// ---- Small helpers -------------------------------------------------------------------------

function byId(id) {
  return document.getElementById(id);
}

function setText(id, text) {
  const node = byId(id);
  if (node.textContent !== text) node.textContent = text;
}

/** An element with attributes and children; strings become text nodes, never markup. */
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function replaceChildren(parent, children) {
  parent.replaceChildren(...children);
}

function link(href, text, className) {
  return el("a", { href, class: className || null }, text);
}

function accountLink(address, text) {
  const label = text || chain.names.get(address) || shortId(address);
  return link(`#/account/${encodeURIComponent(address)}`, label, "mono");
}

function badge(text, kind, title) {
  return el("span", { class: `badge ${kind}`, title: title || null }, text);
}

function facts(pairs) {
  return el("dl", { class: "facts" }, pairs.map(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
}

function table(headings, rows) {
  return el(
    "div",
    { class: "table-wrap" },
    el("table", { class: "data" }, el("thead", {}, el("tr", {}, headings.map((heading) => el("th", {}, heading)))), el("tbody", {}, rows)),
  );
}

function emptyRow(columns, text) {
  return el("tr", {}, el("td", { colspan: columns, class: "empty" }, text));
}

function shortId(id) {
  if (!id) return "—";
  return id.length > 14 ? `${id.slice(0, 10)}…` : id;
}

/** Base units (a decimal string) as TC, exactly: BigInt, no floating point. */
function coins(units) {
  const value = BigInt(units);
  const whole = value / UNITS_PER_COIN;
  const fraction = (value % UNITS_PER_COIN).toString().padStart(8, "0").replace(/0+$/, "");
  return `${whole.toLocaleString("en-US")}${fraction ? `.${fraction}` : ""} TC`;
}

function blocks(count) {
  return count === 1 ? "1 block" : `${count} blocks`;
}

function seconds(milliseconds) {
  return `${(milliseconds / 1000).toFixed(milliseconds < 10000 ? 2 : 1)} s`;
}

function clockTime(unixMs) {
  const date = new Date(unixMs);
  const pad = (number, width) => String(number).padStart(width, "0");
  return `${pad(date.getHours(), 2)}:${pad(date.getMinutes(), 2)}:${pad(date.getSeconds(), 2)}.${pad(date.getMilliseconds(), 3)}`;
}

function ago(unixMs) {
  const elapsed = Date.now() - unixMs;
  return elapsed < 0 ? "just now" : `${seconds(elapsed)} ago`;
}

function until(unixMs) {
  const remaining = unixMs - Date.now();
  return remaining <= 0 ? "eligible now" : `eligible in ${seconds(remaining)}`;
}

// ---- Start ---------------------------------------------------------------------------------

byId("lookup").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = byId("lookup-input").value.trim();
  if (!query) return;
  const hash = `#/find/${encodeURIComponent(query)}`;
  // The same lookup twice changes no hash, so no hashchange event would show it again.
  if (window.location.hash === hash) showRoute();
  else window.location.hash = hash;
});
window.addEventListener("hashchange", showRoute);
// The first round comes before a linked view (#/block/…) is shown, so names are known by then.
poll().finally(showRoute);
