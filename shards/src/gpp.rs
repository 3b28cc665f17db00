//! `gpp`: a zero-allocation reader of IAB Global Privacy Platform (GPP v1) strings, for the one
//! question the bidder asks of them: does a section that applies restrict personalised ads?
//!
//! Owns no state: pure functions over the borrowed string (no buffer, no allocation, no panic on
//! any input). Called by [`crate::privacy::GppCache`] on a cache miss, on the shard's core.
//! Replaces the `iab_gpp` crate on the request path, which allocated ~5 times per decode (a
//! `Vec` of section ids, a hash map, one `String` per section): every request with a GPP string
//! not in the shard's cache paid that (docs/ARCHITECTURE.md, Shards; issue #4).
//!
//! What is read, as `iab_gpp` reads it (the tests compare both on generated strings):
//! - the header: type 3, version 1, the section ids (Fibonacci range, offsets from the previous
//!   id as the GPP specification encodes them) — at most [`MAX_SECTIONS`] ids, each a section
//!   the specification defines (1–23); as many `~`-separated sections as ids;
//! - TCF EU v2 (2): [`crate::privacy::Tcf`] (purposes 1, 3, 4 and our vendor);
//! - US privacy v1 (6): `1` + three of `Y`/`N`/`-`; the third place is the sale opt-out;
//! - US national (7, versions 1 and 2) and the state sections (8–23): the core segment's version
//!   and every field up to the MSPA modes (2 bits each), the MSPA covered transaction must be 1
//!   or 2; optional segments (`.`, 2-bit type) may only be the GPC segment (type 1), once.
//!   Restricts when the sale, sharing or targeted-advertising opt-out says "opted out" (1).
//! - TCF EU v1 (1): version and every field through the vendor consents; TCF Canada (5):
//!   version and the fixed core fields (its vendor lists are not read). Neither restricts.
//!
//! Must never: fail open. A section that applies (listed in `gpp_sid`, or any when `gpp_sid` is
//! empty) but cannot be read restricts, as does a header that cannot be read. Where this reader
//! differs from `iab_gpp` it is stricter: more than [`MAX_SECTIONS`] ids, a header listing three
//! or more single ids (`iab_gpp` mis-adds the offsets there), a TCF Canada section truncated inside
//! its vendor lists (this reader passes it: it never restricts either way).

use crate::privacy::Tcf;

/// Most section ids one GPP string may list (the specification defines 21 sections).
pub const MAX_SECTIONS: usize = 32;

/// Section ids of the GPP specification.
pub mod id {
    pub const TCF_EU_V1: u8 = 1;
    pub const TCF_EU_V2: u8 = 2;
    pub const HEADER: u8 = 3;
    pub const SIGNAL_INTEGRITY: u8 = 4;
    pub const TCF_CA_V1: u8 = 5;
    pub const USP_V1: u8 = 6;
    pub const US_NAT: u8 = 7;
    /// The last state section (Minnesota).
    pub const US_MN: u8 = 23;
}

/// A base64url text (`A–Z a–z 0–9 - _`) read as a string of bits, the way `iab_gpp` reads it:
/// bytes of 8 bits are filled from 6-bit characters, the last byte padded with zeros; a byte can
/// be read only when every character it draws from is valid.
#[derive(Debug, Clone, Copy)]
struct Bits<'a> {
    s: &'a [u8],
    /// Characters before the first one outside the alphabet.
    valid: usize,
}

fn b64url(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    })
}

impl<'a> Bits<'a> {
    fn new(s: &'a str) -> Bits<'a> {
        let s = s.as_bytes();
        let valid = s
            .iter()
            .position(|&c| b64url(c).is_none())
            .unwrap_or(s.len());
        Bits { s, valid }
    }

    /// Bit `p` (0 = the first character's high bit), `None` past the end or when the byte
    /// holding it draws from an invalid character.
    fn bit(&self, p: usize) -> Option<bool> {
        let n = self.s.len();
        let byte = p / 8;
        if byte >= (n * 6).div_ceil(8) {
            return None;
        }
        // The byte's last bit is in character (8·byte + 7) / 6 (or the last one).
        let last_char = ((8 * byte + 7) / 6).min(n - 1);
        if last_char >= self.valid {
            return None;
        }
        let c = p / 6;
        if c >= n {
            return Some(false); // zero padding of the last byte
        }
        let v = b64url(self.s[c])?;
        Some((v >> (5 - p % 6)) & 1 == 1)
    }

    fn int(&self, p: usize, n: usize) -> Option<u32> {
        debug_assert!(n <= 32);
        let mut v = 0u32;
        for i in 0..n {
            v = (v << 1) | u32::from(self.bit(p + i)?);
        }
        Some(v)
    }

    /// A Fibonacci-coded integer at `*p` (ends with two consecutive 1 bits), advancing `*p`.
    /// At most 24 bits of code (values far above any section id); longer is unreadable.
    fn fibonacci(&self, p: &mut usize) -> Option<u32> {
        let (mut a, mut b) = (1u32, 2u32);
        let mut total = 0u32;
        let mut last = false;
        for _ in 0..24 {
            let bit = self.bit(*p)?;
            *p += 1;
            if bit && last {
                return Some(total);
            }
            if bit {
                total = total.checked_add(a)?;
            }
            last = bit;
            (a, b) = (b, a + b);
        }
        None
    }
}

/// The section ids of a GPP header, in order. `None` when the header cannot be read.
fn header_ids(header: &str, ids: &mut [u8; MAX_SECTIONS]) -> Option<usize> {
    let bits = Bits::new(header);
    if bits.int(0, 6)? != u32::from(id::HEADER) || bits.int(6, 6)? != 1 {
        return None;
    }
    let entries = bits.int(12, 12)? as usize;
    let mut p = 24;
    let mut n = 0usize;
    let mut last = 0u32;
    let mut push = |v: u32, n: &mut usize| -> Option<()> {
        // Known section ids only (as iab_gpp's `SectionId`): 1–23.
        if !(1..=u32::from(id::US_MN)).contains(&v) || *n >= MAX_SECTIONS {
            return None;
        }
        ids[*n] = v as u8;
        *n += 1;
        Some(())
    };
    for _ in 0..entries {
        let group = bits.bit(p)?;
        p += 1;
        if group {
            let start = last.checked_add(bits.fibonacci(&mut p)?)?;
            let end = start.checked_add(bits.fibonacci(&mut p)?)?;
            if end - start >= MAX_SECTIONS as u32 {
                return None;
            }
            for v in start..=end {
                push(v, &mut n)?;
            }
            last = end;
        } else {
            let v = last.checked_add(bits.fibonacci(&mut p)?)?;
            push(v, &mut n)?;
            last = v;
        }
    }
    Some(n)
}

/// Where a US section's fields are: 2-bit fields after the 6-bit version, by index.
#[derive(Debug, Clone, Copy)]
struct UsLayout {
    /// Fields up to and including the MSPA service-provider mode.
    fields: u8,
    sale: u8,
    sharing: Option<u8>,
    targeted: Option<u8>,
    /// The MSPA covered transaction (must be 1 or 2).
    mspa: u8,
    /// Optional segments (GPC) may follow the core after `.`.
    segmented: bool,
}

const fn state(fields: u8, targeted: u8, mspa: u8, segmented: bool) -> UsLayout {
    UsLayout {
        fields,
        sale: targeted - 1,
        sharing: None,
        targeted: Some(targeted),
        mspa,
        segmented,
    }
}

/// US national v1 / v2: six notices, then sale, sharing and targeted-advertising opt-outs,
/// 12 / 16 sensitive-data fields, 2 / 3 known-child fields, personal-data consent, MSPA ×3.
const US_NAT_V1: UsLayout = UsLayout {
    fields: 27,
    sale: 6,
    sharing: Some(7),
    targeted: Some(8),
    mspa: 24,
    segmented: true,
};
const US_NAT_V2: UsLayout = UsLayout {
    fields: 32,
    mspa: 29,
    ..US_NAT_V1
};

/// The layout of state section `id` (8–23).
fn us_state(id: u8) -> Option<UsLayout> {
    Some(match id {
        // California: three notices, sale and sharing opt-outs, 9 sensitive, 2 child, consent.
        8 => UsLayout {
            fields: 20,
            sale: 3,
            sharing: Some(4),
            targeted: None,
            mspa: 17,
            segmented: true,
        },
        // Virginia: 3 notices, sale, targeted, 8 sensitive, child, MSPA ×3 (no segments).
        9 => state(17, 4, 14, false),
        // Colorado: 7 sensitive.
        10 => state(16, 4, 13, true),
        // Utah: 4 notices, 8 sensitive, child (no segments).
        11 => state(18, 5, 15, false),
        // Connecticut: 8 sensitive, 3 child.
        12 => state(19, 4, 16, true),
        // Florida (no segments) and Montana: 8 sensitive, 3 child, additional consent.
        13 => state(20, 4, 17, false),
        14 => state(20, 4, 17, true),
        // Oregon: 11 sensitive, 3 child, additional consent.
        15 => state(23, 4, 20, true),
        // Texas: 8 sensitive, child, additional consent.
        16 => state(18, 4, 15, true),
        // Delaware: 9 sensitive, 5 child, additional consent.
        17 => state(23, 4, 20, true),
        // Iowa: 4 notices, 8 sensitive, child.
        18 => state(18, 5, 15, true),
        // Nebraska: 8 sensitive, child, additional consent.
        19 => state(18, 4, 15, true),
        // New Hampshire: 8 sensitive, 3 child, additional consent.
        20 => state(20, 4, 17, true),
        // New Jersey: 10 sensitive, 5 child, additional consent.
        21 => state(24, 4, 21, true),
        // Tennessee, Minnesota: 8 sensitive, child, additional consent.
        22 | 23 => state(18, 4, 15, true),
        _ => return None,
    })
}

/// Whether a US section (7–23) restricts: `Some(true)` opted out, `None` unreadable.
fn us_section(sid: u8, s: &str) -> Option<bool> {
    let state = if sid == id::US_NAT {
        None
    } else {
        Some(us_state(sid)?)
    };
    // Segmented sections read their core from the text before the first `.`; the others read
    // the whole text as base64, where a `.` is a bad character (refused only when a field's
    // byte draws from it, as iab_gpp does: `Bits` stops there).
    let segmented = state.is_none_or(|l| l.segmented);
    let mut segments = s.split('.');
    let core = if segmented {
        segments.next().unwrap_or_default()
    } else {
        s
    };
    let bits = Bits::new(core);
    let layout = match (state, bits.int(0, 6)?) {
        (None, 1) => US_NAT_V1,
        (None, 2) => US_NAT_V2,
        (Some(l), 1) => l,
        _ => return None,
    };
    let field = |i: u8| bits.int(6 + 2 * usize::from(i), 2);
    if !matches!(field(layout.mspa)?, 1 | 2) {
        return None;
    }
    // Every field must be readable (a truncated core is unreadable).
    field(layout.fields - 1)?;
    let opt = |i: Option<u8>| i.map_or(Some(0), field);
    let opted_out =
        field(layout.sale)? == 1 || opt(layout.sharing)? == 1 || opt(layout.targeted)? == 1;
    if segmented {
        let mut gpc_seen = false;
        for seg in segments {
            let b = Bits::new(seg);
            // The only optional segment defined: GPC (type 1), one bit.
            if b.int(0, 2)? != 1 || gpc_seen {
                return None;
            }
            b.bit(2)?;
            gpc_seen = true;
        }
    }
    Some(opted_out)
}

/// US privacy v1 inside GPP: `Some(opted out of sale)`, `None` unreadable.
fn usp(s: &str) -> Option<bool> {
    let b = s.as_bytes();
    if b.len() < 4 || b[0] != b'1' || !b[1..4].iter().all(|c| matches!(c, b'Y' | b'N' | b'-')) {
        return None;
    }
    Some(b[2] == b'Y')
}

/// TCF EU v1: version 1 and every field through the vendor consents readable.
fn tcf_eu_v1(s: &str) -> Option<()> {
    let b = Bits::new(s);
    if b.int(0, 6)? != 1 {
        return None;
    }
    // Created, updated (36 each), CMP id, CMP version (12), screen (6), language (12), vendor
    // list version (12), purposes (24): 156 bits with the version.
    let max_vendor = b.int(156, 16)? as usize;
    let p = 172;
    if !b.bit(p)? {
        if max_vendor > 0 {
            b.bit(p + max_vendor)?;
        }
        return Some(());
    }
    b.bit(p + 1)?; // default consent
    let entries = b.int(p + 2, 12)?;
    let mut q = p + 14;
    for _ in 0..entries {
        let range = b.bit(q)?;
        q += if range { 33 } else { 17 };
        b.bit(q - 1)?;
    }
    Some(())
}

/// TCF Canada v1: version 1 and the fixed core fields readable (199 bits).
fn tcf_ca_v1(s: &str) -> Option<()> {
    let core = s.split('.').next().unwrap_or_default();
    let b = Bits::new(core);
    (b.int(0, 6)? == 1 && b.bit(198).is_some()).then_some(())
}

/// True when no section that applies restricts personalised ads: sections listed in `sid` (all
/// present when `sid` is empty). Unreadable string, or unreadable section that applies: false.
/// Allocates nothing.
pub fn allows(gpp: &str, sid: &[u16], vendor: u16) -> bool {
    allows_inner(gpp, sid, vendor).unwrap_or(false)
}

fn allows_inner(gpp: &str, sid: &[u16], vendor: u16) -> Option<bool> {
    let mut parts = gpp.split('~');
    let header = parts.next().unwrap_or_default();
    let mut ids = [0u8; MAX_SECTIONS];
    let n = header_ids(header, &mut ids)?;
    let ids = &ids[..n];
    // As many sections as ids.
    if gpp.split('~').count() - 1 != n {
        return None;
    }
    for (i, &sec) in ids.iter().enumerate() {
        if !sid.is_empty() && !sid.contains(&u16::from(sec)) {
            continue;
        }
        // A repeated id reads the last section of that id (as iab_gpp's map does).
        let at = ids.iter().rposition(|&x| x == sec).unwrap_or(i);
        let text = gpp.split('~').nth(at + 1)?;
        let restricts = match sec {
            id::TCF_EU_V2 => !Tcf::parse(text).is_some_and(|t| t.allows_personalised_ads(vendor)),
            id::USP_V1 => usp(text)?,
            id::US_NAT..=id::US_MN => us_section(sec, text)?,
            id::TCF_EU_V1 => tcf_eu_v1(text).map(|()| false)?,
            id::TCF_CA_V1 => tcf_ca_v1(text).map(|()| false)?,
            // The header and signal-integrity ids are not sections: unreadable.
            _ => return None,
        };
        if restricts {
            return Some(false);
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test-only bit writer producing base64url text.
    #[derive(Default)]
    struct W(Vec<bool>);
    impl W {
        fn int(&mut self, v: u64, n: usize) -> &mut Self {
            for i in (0..n).rev() {
                self.0.push((v >> i) & 1 == 1);
            }
            self
        }
        fn fib(&mut self, mut v: u32) -> &mut Self {
            let mut f = vec![1u32, 2];
            while *f.last().unwrap() <= v {
                let k = f.len();
                f.push(f[k - 1] + f[k - 2]);
            }
            let mut bits = vec![false; f.len()];
            for k in (0..f.len()).rev() {
                if f[k] <= v {
                    bits[k] = true;
                    v -= f[k];
                }
            }
            while bits.last() == Some(&false) {
                bits.pop();
            }
            self.0.extend(bits);
            self.0.push(true);
            self
        }
        fn text(&self) -> String {
            let mut b = self.0.clone();
            while !b.len().is_multiple_of(6) {
                b.push(false);
            }
            let alpha = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            b.chunks(6)
                .map(|c| alpha[c.iter().fold(0, |a, b| (a << 1) | usize::from(*b))] as char)
                .collect()
        }
    }

    fn header(ids: &[u8]) -> String {
        let mut w = W::default();
        w.int(3, 6).int(1, 6).int(ids.len() as u64, 12);
        let mut last = 0u32;
        for &i in ids {
            w.int(0, 1).fib(u32::from(i) - last);
            last = u32::from(i);
        }
        w.text()
    }

    #[test]
    fn reads_headers_as_the_specification_examples() {
        let mut ids = [0u8; MAX_SECTIONS];
        // From the GPP specification: one TCF EU v2 section; TCF EU v2 and US privacy.
        assert_eq!(header_ids("DBABMA", &mut ids), Some(1));
        assert_eq!(ids[0], 2);
        assert_eq!(header_ids("DBACNY", &mut ids), Some(2));
        assert_eq!(&ids[..2], &[2, 6]);
        assert_eq!(header_ids("DBABTA", &mut ids), Some(1));
        assert_eq!(ids[0], 6);
        // Our encoder agrees, including offsets past two ids (the spec's delta coding).
        assert_eq!(header(&[2, 6]), "DBACNY");
        let h = header(&[2, 6, 7, 8, 23]);
        assert_eq!(header_ids(&h, &mut ids), Some(5));
        assert_eq!(&ids[..5], &[2, 6, 7, 8, 23]);
        // Unknown section id, wrong type, truncated.
        assert_eq!(header_ids(&header(&[24]), &mut ids), None);
        assert_eq!(header_ids("ABAB", &mut ids), None);
        assert_eq!(header_ids("DB", &mut ids), None);
        assert_eq!(header_ids("", &mut ids), None);
    }

    #[test]
    fn known_strings_agree_with_iab_gpp() {
        // From the GPP specification examples (iab_gpp's test data) and hand-made variants.
        for (s, sid) in [
            ("DBABLA~BVVVVVVVVWA", &[7u16][..]),
            ("DBABLA~BAAAAAAAAQA", &[7]),
            ("DBABBg~BVVVVVVY", &[8]),
            ("DBABM~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA", &[2]),
            ("DBABTA~1YNN", &[6]),
            ("DBABTA~1NYN", &[6]),
            ("DBABL~BVVqAAEABCA.QA", &[7]),
            ("DBABL~BVQqAAAAAgA.QA", &[7]),
            ("DBABBg~BVoYYZoI.QA", &[8]),
            ("DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA", &[2]),
            (
                "DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN",
                &[2, 6],
            ),
            (
                "DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN",
                &[],
            ),
            ("DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA", &[7]),
            ("garbage", &[7]),
            ("DBABTA~1YNN~1NNN", &[6]),
        ] {
            assert_eq!(
                allows(s, sid, 755),
                crate::privacy::gpp_allows_reference(s, sid, 755),
                "{s} {sid:?}"
            );
        }
        // US privacy: the third place is the sale opt-out.
        assert!(allows("DBABTA~1YNN", &[6], 755));
        assert!(!allows("DBABTA~1NYN", &[6], 755));
    }

    /// A US section with the given 2-bit field values (after the version) and GPC segment.
    fn us(version: u8, fields: &[u8], gpc: Option<bool>) -> String {
        let mut w = W::default();
        w.int(u64::from(version), 6);
        for &f in fields {
            w.int(u64::from(f), 2);
        }
        let mut s = w.text();
        if let Some(g) = gpc {
            let mut w = W::default();
            w.int(1, 2).int(u64::from(g), 1);
            s.push('.');
            s.push_str(&w.text());
        }
        s
    }

    /// Small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn agrees_with_iab_gpp_on_generated_us_sections() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut restricted, mut allowed) = (0, 0);
        for _ in 0..20_000 {
            let sec = 7 + r.below(17) as u8;
            let version = if sec == 7 { 1 + r.below(2) as u8 } else { 1 };
            let layout = if sec == 7 {
                if version == 1 { US_NAT_V1 } else { US_NAT_V2 }
            } else {
                us_state(sec).unwrap()
            };
            let mut fields: Vec<u8> = (0..layout.fields).map(|_| r.below(4) as u8).collect();
            // Mostly a valid MSPA covered transaction, sometimes not.
            if r.below(8) != 0 {
                fields[layout.mspa as usize] = 1 + r.below(2) as u8;
            }
            // Sometimes truncated or with a bad version.
            if r.below(10) == 0 {
                fields.truncate(r.below(u64::from(layout.fields)) as usize);
            }
            let v = if r.below(20) == 0 { 3 } else { version };
            let gpc = match r.below(3) {
                0 => None,
                k => Some(k == 1),
            };
            let text = us(
                v,
                &fields,
                gpc.filter(|_| layout.segmented || r.below(4) == 0),
            );
            let mut ids = vec![sec];
            let mut sections = vec![text];
            if r.below(3) == 0 {
                ids.insert(0, 6);
                sections.insert(0, if r.below(2) == 0 { "1YNN" } else { "1NYN" }.into());
            }
            let s = format!("{}~{}", header(&ids), sections.join("~"));
            let sid: Vec<u16> = match r.below(3) {
                0 => vec![],
                1 => vec![u16::from(sec)],
                _ => vec![6],
            };
            let ours = allows(&s, &sid, 755);
            assert_eq!(
                ours,
                crate::privacy::gpp_allows_reference(&s, &sid, 755),
                "{s} {sid:?}"
            );
            if ours {
                allowed += 1;
            } else {
                restricted += 1;
            }
        }
        // Both verdicts are well represented.
        assert!(
            allowed > 3000 && restricted > 3000,
            "{allowed} {restricted}"
        );
    }

    #[test]
    fn never_more_permissive_than_iab_gpp_on_mangled_strings() {
        let mut r = Rng(0x1234_5678_9abc_def1);
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~+/= ";
        let seeds = [
            "DBABTA~1YNN",
            "DBABLA~BVVVVVVVVWA",
            "DBABBg~BVVVVVVY",
            "DBABL~BVVqAAEABCA.QA",
            "DBABBg~BVoYYZoI.QA",
            "DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN",
        ];
        let mut agree = 0;
        for i in 0..20_000 {
            let mut s: Vec<u8> = seeds[i % seeds.len()].bytes().collect();
            for _ in 0..1 + r.below(3) {
                let at = r.below(s.len() as u64 + 1) as usize;
                match r.below(3) {
                    0 if at < s.len() => s[at] = alphabet[r.below(alphabet.len() as u64) as usize],
                    1 if at < s.len() => {
                        s.remove(at);
                    }
                    _ => s.insert(at, alphabet[r.below(alphabet.len() as u64) as usize]),
                }
            }
            let s = String::from_utf8(s).unwrap();
            for sid in [&[][..], &[6], &[7], &[8], &[2]] {
                let ours = allows(&s, sid, 755);
                let theirs = crate::privacy::gpp_allows_reference(&s, sid, 755);
                assert!(
                    !ours || theirs,
                    "more permissive than iab_gpp on {s:?} {sid:?}"
                );
                agree += usize::from(ours == theirs);
            }
        }
        // Differences are rare (the stricter cases in the module documentation).
        assert!(agree > 99_000, "{agree} of 100,000");
    }

    /// Hostile shapes: long, many sections, empty. (Allocations are counted in tests/alloc.rs.)
    #[test]
    fn hostile_strings_are_refused_without_panicking() {
        let long = format!("DBABTA~{}", "Y".repeat(100_000));
        assert!(!allows(&long, &[], 755));
        let many = format!("{}{}", header(&[2, 6]), "~".repeat(10_000));
        assert!(!allows(&many, &[], 755));
        assert!(!allows("~~~~", &[], 755));
        assert!(!allows("D", &[], 755));
    }
}
