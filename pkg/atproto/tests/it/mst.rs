//! MST vectors: the interop key heights and common prefixes, and every one of
//! the 16,384 `mst-diff` cases of DavidBuchanan314/mst-test-suite (record ops,
//! created and deleted nodes, derived from walking both trees).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::*;
use skyhouse_atproto::car::{read_car_bytes, CarOptions};
use skyhouse_atproto::mst::{self, common_prefix_len, key_height, Walker};
use skyhouse_atproto::Cid;

#[test]
fn interop_key_heights() {
    let cases: Vec<serde_json::Value> =
        serde_json::from_slice(&read("interop/mst/key_heights.json")).expect("json");
    for c in &cases {
        let key = c["key"].as_str().expect("key");
        assert_eq!(
            u64::from(key_height(key.as_bytes())),
            c["height"].as_u64().expect("h"),
            "{key:?}"
        );
    }
    println!("key heights: {} cases", cases.len());
    assert!(cases.len() >= 9);
}

#[test]
fn interop_common_prefix() {
    let cases: Vec<serde_json::Value> =
        serde_json::from_slice(&read("interop/mst/common_prefix.json")).expect("json");
    for c in &cases {
        let (l, r) = (
            c["left"].as_str().expect("l"),
            c["right"].as_str().expect("r"),
        );
        assert_eq!(
            common_prefix_len(l.as_bytes(), r.as_bytes()) as u64,
            c["len"].as_u64().expect("len"),
            "{l:?} {r:?}"
        );
    }
    println!("common prefix: {} cases", cases.len());
    assert!(cases.len() >= 10);
}

/// Minimal ustar reader: (path, contents) of every regular file.
fn untar(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 512 <= data.len() {
        let h = &data[pos..pos + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let field = |a: usize, b: usize| {
            let f = &h[a..b];
            String::from_utf8_lossy(&f[..f.iter().position(|&c| c == 0).unwrap_or(f.len())])
                .to_string()
        };
        let name = field(0, 100);
        let prefix = field(345, 500);
        let size = usize::from_str_radix(field(124, 136).trim(), 8).expect("size");
        let kind = h[156];
        pos += 512;
        if kind == b'0' || kind == 0 {
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            out.push((path, data[pos..pos + size].to_vec()));
        }
        pos += size.div_ceil(512) * 512;
    }
    out
}

struct Tree {
    entries: BTreeMap<String, Cid>,
    nodes: BTreeSet<Cid>,
}

fn load_tree(rel: &str) -> Tree {
    let (roots, store) = read_car_bytes(&read(rel), CarOptions::default()).expect("car");
    let mut entries = BTreeMap::new();
    let mut w = Walker::new(&store).collect_nodes();
    w.walk::<std::convert::Infallible>(&roots[0], &mut |k, v| {
        entries.insert(String::from_utf8(k.to_vec()).expect("utf8"), v);
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{rel}: {e}"));
    Tree {
        entries,
        nodes: w.nodes().iter().copied().collect(),
    }
}

fn cids(v: &serde_json::Value) -> BTreeSet<Cid> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|c| c.as_str().expect("str").parse().expect("cid"))
        .collect()
}

#[test]
fn mst_test_suite_exhaustive_diffs() {
    let tar = crate::unzstd(&read("mst-test-suite/tests-diff-exhaustive.tar.zst")).expect("zstd");
    let files = untar(&tar);
    let mut trees: HashMap<String, Tree> = HashMap::new();
    let mut n = 0;
    for (path, body) in files.iter().filter(|(p, _)| p.ends_with(".json")) {
        let case: serde_json::Value = serde_json::from_slice(body).expect("json");
        assert_eq!(case["$type"], "mst-diff", "{path}");
        for k in ["mst_a", "mst_b"] {
            let rel = case["inputs"][k]
                .as_str()
                .expect("input")
                .trim_start_matches("./")
                .to_string();
            trees
                .entry(rel.clone())
                .or_insert_with(|| load_tree(&format!("mst-test-suite/{rel}")));
        }
        let a = &trees[case["inputs"]["mst_a"]
            .as_str()
            .expect("a")
            .trim_start_matches("./")];
        let b = &trees[case["inputs"]["mst_b"]
            .as_str()
            .expect("b")
            .trim_start_matches("./")];
        // record ops: keys whose value differs between the trees
        let mut ops = Vec::new();
        let keys: BTreeSet<&String> = a.entries.keys().chain(b.entries.keys()).collect();
        for k in keys {
            let (old, new) = (a.entries.get(k), b.entries.get(k));
            if old != new {
                ops.push(serde_json::json!({
                    "rpath": k,
                    "old_value": old.map(Cid::to_string),
                    "new_value": new.map(Cid::to_string),
                }));
            }
        }
        let want_ops = case["results"]["record_ops"].as_array().expect("ops");
        assert_eq!(&ops, want_ops, "{path}: record ops");
        let created: BTreeSet<Cid> = b.nodes.difference(&a.nodes).copied().collect();
        let deleted: BTreeSet<Cid> = a.nodes.difference(&b.nodes).copied().collect();
        assert_eq!(
            created,
            cids(&case["results"]["created_nodes"]),
            "{path}: created nodes"
        );
        assert_eq!(
            deleted,
            cids(&case["results"]["deleted_nodes"]),
            "{path}: deleted nodes"
        );
        n += 1;
    }
    println!("mst-diff cases: {n} over {} trees", trees.len());
    assert_eq!(n, 16_384);
    assert_eq!(trees.len(), 128);
}

#[test]
fn exhaustive_cars_walk_and_entries_agree() {
    let t = load_tree("mst-test-suite/cars/exhaustive/exhaustive_127.car");
    let (roots, store) = read_car_bytes(
        &read("mst-test-suite/cars/exhaustive/exhaustive_127.car"),
        CarOptions::default(),
    )
    .expect("car");
    let list = mst::entries(&store, &roots[0]).expect("entries");
    assert_eq!(list.len(), t.entries.len());
    assert_eq!(list.len(), 7);
    assert!(list.windows(2).all(|w| w[0].0 < w[1].0));
}
