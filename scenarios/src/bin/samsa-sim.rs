//! The scenario runner (list / run / sweep / mutants).
fn main() {}
