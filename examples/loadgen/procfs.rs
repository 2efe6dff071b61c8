//! What a server process tree costs, from /proc: memory (PSS, RSS) and I/O counters.

use std::collections::HashMap;
use std::fs;

/// The pid and all its descendants (processes, not threads).
pub fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The command name may hold spaces and parentheses: fields follow the last ')'.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        if let Some(c) = children.get(&all[i]) {
            all.extend(c);
        }
        i += 1;
    }
    all
}

/// Sums `key:` fields (in kB) of a /proc file over the tree.
fn sum_field(pids: &[u32], file: &str, key: &str) -> u64 {
    pids.iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/{file}")).ok())
        .map(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix(key))
                .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// PSS and RSS of the whole tree, in KiB.
pub fn memory_kib(root: u32) -> (u64, u64) {
    let pids = tree(root);
    (
        sum_field(&pids, "smaps_rollup", "Pss:"),
        sum_field(&pids, "smaps_rollup", "Rss:"),
    )
}

/// One /proc/PID/io counter (`rchar:`, `wchar:`, `write_bytes:` ...) summed over the tree. A
/// reaped child's counts are folded into its parent's, so a session process that has exited
/// still counts under the server's root.
pub fn io_field(root: u32, key: &str) -> u64 {
    sum_field(&tree(root), "io", key)
}
