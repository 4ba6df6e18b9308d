//! The web explorer (`GET /` on a node's RPC port) in a real browser: headless Chromium over
//! WebDriver against a real 4-node testnet (1 s blocks), the page left open the whole time as a
//! person would leave it. It shows the tip RPC `status` shows; a new block appears without a
//! reload; the election view is `get_election`'s ranking, validator by validator; the lookup box
//! finds a transfer the wallet just sent, follows it to final on its own, and finds its block;
//! the page fits a laptop and a phone without sideways scrolling. Screenshots of the run go to
//! `target/explorer.png` (laptop) and `target/explorer-phone.png`.
//!
//! One testnet and one browser serve every check (held under `serial()`). Chromium and
//! chromedriver must be installed (Debian `chromium`, `chromium-driver`; `.ci/run` installs them):
//! without them the test fails saying so, it never skips.

#![allow(clippy::unwrap_used)]

#[path = "support/browser.rs"]
mod browser;
mod support;

use browser::Browser;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{serial, Testnet, EXE};

/// Generous: a loaded 2-core machine; the page polls about once a second.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the screenshots go: the target directory (`target/tmp` is Cargo's scratch for tests).
fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().to_path_buf()
}

fn page_number(browser: &Browser, css: &str, attribute: &str) -> Option<u64> {
    browser.attribute(css, attribute)?.parse().ok()
}

#[test]
fn the_explorer_in_a_real_browser_follows_a_live_testnet() {
    let _serial = serial();
    let started = Instant::now();
    // The browser first: without chromium or chromedriver the test fails at once, saying so.
    let browser = Browser::start();
    let mut net = Testnet::init(4, 1_000, 4_000);
    net.start_all();
    net.wait_for(Duration::from_secs(60), "a final block", |net| {
        net.finalized(0).filter(|(height, _)| *height >= 1).map(|_| ())
    });
    let url = format!("{}/", net.nodes[0].rpc);
    browser.goto(&url);
    browser.wait_for(PAGE_TIMEOUT, "the page's first render", |browser| {
        (browser.attribute("body", "data-ready").as_deref() == Some("true")).then_some(())
    });
    let loaded = Instant::now();

    the_page_shows_the_tip_rpc_shows(&net, &browser);
    a_new_block_appears_without_a_reload(&net, &browser);
    the_election_view_matches_get_election(&net, &browser);
    the_lookup_finds_a_transfer_the_wallet_just_sent(&net, &browser);
    the_page_fits_a_laptop_and_a_phone(&browser, &url);
    // Everything above happened in the one page load (the lookups change only the #fragment).
    let navigations = browser.execute("return performance.getEntriesByType('navigation').length;", vec![]);
    assert_eq!(navigations, json!(1), "the page was never reloaded");
    eprintln!("explorer checks took {:?} ({:?} with the page open)", started.elapsed(), loaded.elapsed());
}

/// What a new user does: run `tinychain testnet`, open the URL it prints. Each node's explorer
/// URL is printed, and it answers the page (HTML, with its security policy) on that node's port.
#[test]
fn tinychain_testnet_prints_each_nodes_explorer_url_and_it_serves_the_page() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net");
    let base = support::free_ports(4);
    let mut runner = Command::new(EXE)
        .args(["testnet", "--nodes", "2", "--dir", path.to_str().unwrap(), "--base-port", &base.to_string()])
        .args(["--block-interval-ms", "500", "--producer-timeout-ms", "3000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = runner.stdout.take().unwrap();
    let (lines_sender, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let _ = lines_sender.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut urls = Vec::new();
    while Instant::now() < deadline && urls.len() < 2 {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) else { continue };
        // "  node-1   explorer http://127.0.0.1:7741/"
        if let [_, "explorer", url] = line.split_whitespace().collect::<Vec<_>>()[..] {
            urls.push(url.to_string());
        }
        seen.push(line);
    }
    let expected: Vec<String> = [1, 3].iter().map(|offset| format!("http://127.0.0.1:{}/", base + offset)).collect();
    assert_eq!(urls, expected, "each node's explorer URL, on its RPC port:\n{}", seen.join("\n"));
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).http_status_as_error(false).build(),
    );
    for url in &urls {
        // The URLs are printed as the nodes start: give each a moment to listen.
        let answered_by = Instant::now() + Duration::from_secs(30);
        let mut response = loop {
            match agent.get(url).call() {
                Ok(response) => break response,
                Err(_) if Instant::now() < answered_by => std::thread::sleep(Duration::from_millis(200)),
                Err(error) => panic!("{url} does not answer: {error}"),
            }
        };
        assert_eq!(response.status().as_u16(), 200, "{url}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert!(headers["content-security-policy"].to_str().unwrap().contains("connect-src 'self'"));
        let page = response.body_mut().read_to_string().unwrap();
        assert!(page.contains("<title>tinychain explorer</title>") && page.contains("id=\"tip-height\""), "{url}");
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(runner.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let stopped_by = Instant::now() + Duration::from_secs(30);
    while runner.try_wait().unwrap().is_none() {
        assert!(Instant::now() < stopped_by, "the runner stops on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// RPC `status` before ≤ the page's tip ≤ RPC `status` after, with the hash of that height.
/// The page polls once a second, so a block may land between two readings: the bounds are
/// retried until they hold, but the page is never ahead of the node.
fn the_page_shows_the_tip_rpc_shows(net: &Testnet, browser: &Browser) {
    let (height, hash) = browser.wait_for(PAGE_TIMEOUT, "the page's tip between two RPC readings", |browser| {
        let (before, _) = net.tip(0)?;
        // One script reads the card at once: a render between two reads would mix two tips.
        let card = browser.execute(
            "const card = document.getElementById('tip-height');
             return [card.dataset.tipHeight, card.dataset.tipHash, card.textContent];",
            vec![],
        );
        let (after, _) = net.tip(0)?;
        let shown: u64 = card[0].as_str()?.parse().ok()?;
        let shown_hash = card[1].as_str()?.to_string();
        assert!(shown <= after, "the page shows tip {shown}, above the node's {after}");
        assert_eq!(card[2].as_str(), Some(shown.to_string().as_str()), "the tip card shows its own height");
        (before <= shown).then_some((shown, shown_hash))
    });
    assert_eq!(
        net.header(0, height).unwrap()["hash"].as_str(),
        Some(hash.as_str()),
        "the page's tip hash is the node's"
    );
    // The two other heights follow `status` too (finality trails the tip).
    let justified = page_number(browser, "#justified-height", "data-justified-height").unwrap();
    let final_height = page_number(browser, "#final-height", "data-final-height").unwrap();
    let status = net.status(0).unwrap();
    assert!(
        final_height <= justified && justified <= height,
        "final {final_height} ≤ justified {justified} ≤ tip {height}"
    );
    assert!(justified <= status["justified"]["height"].as_u64().unwrap());
    assert!(final_height <= status["finalized"]["height"].as_u64().unwrap());
    // The strip and the list end at the tip the page shows, coloured by the page's own heights.
    let strip = browser.execute(
        "const cells = [...document.querySelectorAll('#block-strip .cell')];
         return cells.map((cell) => [Number(cell.dataset.height), cell.dataset.state]);",
        vec![],
    );
    let cells = strip.as_array().unwrap();
    assert!(!cells.is_empty(), "the strip shows blocks");
    for cell in cells {
        let (cell_height, state) = (cell[0].as_u64().unwrap(), cell[1].as_str().unwrap());
        let expected = if cell_height <= final_height {
            "final"
        } else if cell_height <= justified {
            "justified"
        } else {
            "pending"
        };
        // The strip may be one render newer than the cards read above, never older.
        assert!(
            state == expected || cell_height > final_height,
            "block {cell_height} drawn {state}, expected {expected}"
        );
    }
}

/// The page is left alone: a later block shows up at the top of the list and the end of the
/// strip, with the node's hash, and a marker set in the page survives (no reload happened).
fn a_new_block_appears_without_a_reload(net: &Testnet, browser: &Browser) {
    browser.execute("window.explorerTestMarker = 'still the same page'; return null;", vec![]);
    let first = page_number(browser, "#block-list tbody tr", "data-height").unwrap();
    let (newer, newer_hash) = browser.wait_for(PAGE_TIMEOUT, "a newer block at the top of the list", |browser| {
        let row = browser.execute(
            "const row = document.querySelector('#block-list tbody tr');
             return [row.dataset.height, row.dataset.hash];",
            vec![],
        );
        let height: u64 = row[0].as_str()?.parse().ok()?;
        (height > first).then_some((height, row[1].as_str()?.to_string()))
    });
    assert_eq!(
        net.header(0, newer).unwrap()["hash"].as_str(),
        Some(newer_hash.as_str()),
        "block {newer} as the node has it"
    );
    let strip_end = browser.execute(
        "const cells = document.querySelectorAll('#block-strip .cell');
         return Number(cells[cells.length - 1].dataset.height);",
        vec![],
    );
    assert!(strip_end.as_u64().unwrap() >= newer, "the strip reaches block {newer}: {strip_end}");
    let marker = browser.execute("return window.explorerTestMarker || null;", vec![]);
    assert_eq!(marker, json!("still the same page"), "the block arrived without a reload");
}

/// Every validator's line of the election view against `get_election` for the same block on the
/// same parent: same validators in the same order, same rank, committed score, production in the
/// window, jail, demotion and eligibility time. The page and the test ask at different moments,
/// so the comparison waits for a reading where both describe the same next block.
fn the_election_view_matches_get_election(net: &Testnet, browser: &Browser) {
    let compared = browser.wait_for(PAGE_TIMEOUT, "the page and get_election on the same parent", |browser| {
        let page = browser.execute(
            "const table = document.getElementById('election');
             const rows = [...table.tBodies[0].rows].map((row) => ({
               node_id: row.dataset.nodeId,
               rank: row.dataset.rank,
               score: row.dataset.score,
               produced_in_window: row.dataset.producedInWindow,
               eligible_at_ms: row.dataset.eligibleAtMs,
               jailed_until: row.dataset.jailedUntil,
               demotion: row.dataset.demotion,
               cells: [...row.cells].map((cell) => cell.textContent),
             }));
             return { height: table.dataset.height, parent_hash: table.dataset.parentHash, rows };",
            vec![],
        );
        let election = net.rpc(0, "get_election", json!({}))?.ok()?;
        let same_block = page["height"].as_str()? == election["height"].as_u64()?.to_string()
            && page["parent_hash"] == election["parent"]["hash"];
        same_block.then_some((page, election))
    });
    let (page, election) = compared;
    let rows = page["rows"].as_array().unwrap();
    let candidates = election["candidates"].as_array().unwrap();
    assert_eq!(rows.len(), candidates.len(), "one line per validator:\n{page:#}\n{election:#}");
    assert_eq!(rows.len(), net.nodes.len());
    let text = |value: &Value| match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    for (row, candidate) in rows.iter().zip(candidates) {
        let context = format!("page {row}\nrpc {candidate}");
        assert_eq!(row["node_id"], candidate["node_id"], "same validator at this line: {context}");
        assert_eq!(text(&row["rank"]), text(&candidate["rank"]), "{context}");
        assert_eq!(text(&row["score"]), text(&candidate["score"]), "{context}");
        assert_eq!(text(&row["produced_in_window"]), text(&candidate["produced_in_window"]), "{context}");
        assert_eq!(text(&row["eligible_at_ms"]), text(&candidate["eligible_at_ms"]), "{context}");
        assert_eq!(text(&row["jailed_until"]), text(&candidate["jailed_until"]), "{context}");
        assert_eq!(text(&row["demotion"]), text(&candidate["demotion"]["reason"]), "{context}");
        // What a person reads: the rank, the name and the score in the first three cells.
        let cells = row["cells"].as_array().unwrap();
        assert_eq!(cells[0].as_str().unwrap(), text(&candidate["rank"]), "{context}");
        assert_eq!(cells[1].as_str().unwrap(), candidate["name"].as_str().unwrap(), "{context}");
        let score = candidate["score"].as_u64().map_or("—".to_string(), |score| score.to_string());
        assert_eq!(cells[2].as_str().unwrap(), score, "{context}");
    }
    // The first line is who `status` names as the next producer, and the sentence says why.
    let first_name = candidates[0]["name"].as_str().unwrap();
    let why = browser.text("#election-why").unwrap();
    assert!(why.starts_with(&format!("{first_name} is first")), "{why}");
}

/// The wallet sends 2.5 TC; typing its id into the lookup box shows that transfer (amount, both
/// addresses), which then turns final on the page by itself; typing its block's height shows the
/// block with the transfer in it.
fn the_lookup_finds_a_transfer_the_wallet_just_sent(net: &Testnet, browser: &Browser) {
    let recipient = net.nodes[1].id.clone();
    let output = Command::new(EXE)
        .arg("wallet")
        .args(["--wallet", net.path().join("wallet").to_str().unwrap(), "--rpc", &net.nodes[0].rpc])
        .args(["send", &recipient, "2.5", "--json"])
        .env("TINYCHAIN_PASSPHRASE", "")
        .env_remove("TINYCHAIN_WALLET")
        .env_remove("TINYCHAIN_RPC")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "wallet send: {}", String::from_utf8_lossy(&output.stderr));
    let sent: Value = serde_json::from_slice(&output.stdout).unwrap();
    let id = sent["id"].as_str().unwrap().to_string();
    let sender = sent["from"].as_str().unwrap().to_string();

    browser.type_into("#lookup-input", &id);
    browser.click("#lookup-button");
    let detail = format!("#detail[data-kind='transfer'][data-id='{id}']");
    let status =
        browser.wait_for(PAGE_TIMEOUT, "the transfer's page", |browser| browser.attribute(&detail, "data-status"));
    assert!(["pending", "committed", "final"].contains(&status.as_str()), "a transfer just sent is {status}");
    let shown = browser.text(&detail).unwrap();
    for expected in [id.as_str(), sender.as_str(), recipient.as_str(), "2.5 TC"] {
        assert!(shown.contains(expected), "the transfer's page shows {expected}:\n{shown}");
    }
    // Left open, the page follows it to final (it reloads an open view at each new tip).
    browser.wait_for(Duration::from_secs(60), "the transfer's page to say final", |browser| {
        (browser.attribute(&detail, "data-status").as_deref() == Some("final")).then_some(())
    });
    let answer = net.rpc_ok(0, "get_tx", json!({ "id": id }));
    assert_eq!(answer["status"], "final");
    let height = answer["height"].as_u64().unwrap();

    browser.type_into("#lookup-input", &height.to_string());
    browser.click("#lookup-button");
    let block = format!("#detail[data-kind='block'][data-id='{height}']");
    browser.wait_for(PAGE_TIMEOUT, "the block's page", |browser| browser.attribute(&block, "data-status"));
    let row = format!("{block} tr[data-id='{id}']");
    assert!(browser.text(&row).is_some_and(|text| text.contains("2.5 TC")), "block {height} lists the transfer");
    // Back to the chain for the screenshots.
    browser.type_into("#lookup-input", "");
    browser.click("#detail-close");
    browser.wait_for(PAGE_TIMEOUT, "the detail view to close", |browser| {
        (browser.execute("return document.getElementById('detail').hidden;", vec![]) == json!(true)).then_some(())
    });
}

/// At a laptop's and a phone's width nothing makes the page itself scroll sideways (wide tables
/// scroll inside their own box); a screenshot of each goes to the target directory.
fn the_page_fits_a_laptop_and_a_phone(browser: &Browser, url: &str) {
    let overflow = "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];";
    for (name, width, height) in [("explorer.png", 1366, 1100), ("explorer-phone.png", 400, 900)] {
        browser.set_window_size(width, height);
        // Let a poll or two render at the new size.
        std::thread::sleep(Duration::from_millis(1_500));
        let widths = browser.execute(overflow, vec![]);
        let (scroll, client) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(scroll <= client, "{url} at {width} px scrolls sideways: content {scroll} px in {client} px");
        let path = target_dir().join(name);
        browser.screenshot(&path);
        eprintln!("screenshot: {}", path.display());
    }
}
