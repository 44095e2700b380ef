//! Fault-coverage accounting: per run, how often each fault type and buggify site fired; across a
//! sweep, in how many seeds each fired. Plain data, serialised as `name=count` tokens so child
//! processes can report it on one line. Never drops a name: the table lists zero rows too.

use std::collections::BTreeMap;

/// Counts per name for one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub counts: BTreeMap<String, u64>,
}

impl Coverage {
    pub fn add(&mut self, name: &str, n: u64) {
        if n == 0 {
            self.counts.entry(name.to_string()).or_insert(0);
            return;
        }
        *self.counts.entry(name.to_string()).or_insert(0) += n;
    }

    pub fn merge(&mut self, other: &Coverage) {
        for (name, n) in &other.counts {
            self.add(name, *n);
        }
    }

    pub fn get(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// `a=1,b=0` (names never contain `,` or `=`).
    pub fn encode(&self) -> String {
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.join(",")
    }

    /// Inverse of `encode`; malformed tokens are skipped.
    pub fn decode(text: &str) -> Coverage {
        let mut c = Coverage::default();
        for token in text.split(',').filter(|t| !t.is_empty()) {
            if let Some((k, v)) = token.split_once('=') {
                if let Ok(n) = v.parse::<u64>() {
                    c.add(k, n);
                }
            }
        }
        c
    }
}

/// Across seeds: in how many seeds each name fired (count > 0), and total hits.
#[derive(Clone, Debug, Default)]
pub struct CoverageTable {
    pub seeds: u64,
    rows: BTreeMap<String, (u64, u64)>,
}

impl CoverageTable {
    pub fn add_run(&mut self, run: &Coverage) {
        self.seeds += 1;
        for (name, n) in &run.counts {
            let row = self.rows.entry(name.clone()).or_insert((0, 0));
            if *n > 0 {
                row.0 += 1;
            }
            row.1 += n;
        }
    }

    /// (name, seeds fired in, total hits), sorted by name.
    pub fn rows(&self) -> Vec<(String, u64, u64)> {
        self.rows
            .iter()
            .map(|(k, (s, t))| (k.clone(), *s, *t))
            .collect()
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "{:<44} {:>10} {:>12}\n",
            "fault / buggify site", "seeds", "hits"
        );
        for (name, seeds, hits) in self.rows() {
            let pct = if self.seeds == 0 {
                0.0
            } else {
                100.0 * seeds as f64 / self.seeds as f64
            };
            out.push_str(&format!("{name:<44} {seeds:>5} {pct:>3.0}% {hits:>12}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_and_table() {
        let mut c = Coverage::default();
        c.add("disk.fsync_eio", 2);
        c.add("net.reset", 0);
        let d = Coverage::decode(&c.encode());
        assert_eq!(c, d);
        let mut t = CoverageTable::default();
        t.add_run(&d);
        t.add_run(&Coverage::decode("disk.fsync_eio=0,junk,x=y"));
        let rows = t.rows();
        assert_eq!(rows[0], ("disk.fsync_eio".to_string(), 1, 2));
        assert_eq!(rows[1], ("net.reset".to_string(), 0, 0));
        assert!(t.render().contains("disk.fsync_eio"));
    }
}
