//! The full example in `docs/CAMPAIGNS.md` (JSON and TOML) compiles, and means what it says.

#![allow(clippy::unwrap_used)] // the document is fixed input

const DOC: &str = include_str!("../../docs/CAMPAIGNS.md");

fn block(lang: &str) -> &'static str {
    let start = DOC.find(&format!("```{lang}\n")).unwrap() + lang.len() + 4;
    let len = DOC[start..].find("```").unwrap();
    &DOC[start..start + len]
}

#[test]
fn the_documented_example_is_a_valid_set() {
    let set = shards::CompiledSet::parse(block("json").as_bytes()).unwrap();
    assert_eq!(set.version, 42);
    let c = &set.compiled[set.position(1001).unwrap()];
    assert_eq!(c.advertiser_id, 10);
    assert_eq!(c.utc_offset_s, -300 * 60);
    assert_eq!(c.creatives.len(), 3);
    assert_eq!(c.max_cpm.0, 4_500_000);
    assert!(!set.index.active.get(set.position(1002).unwrap()));
    let t = shards::CompiledSet::parse_toml(block("toml")).unwrap();
    assert_eq!(t.compiled[0].id, 1001);
}
