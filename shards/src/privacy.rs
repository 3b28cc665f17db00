//! Privacy signals → may this request use personal data? ([`Privacy::evaluate`])
//!
//! Owns: a zero-allocation TCF v2 core-string reader ([`Tcf`], bits read straight from the
//! base64url text), the US privacy string rule, COPPA, and GPP (`regs.gpp` + `gpp_sid`) through
//! our zero-allocation GPP reader ([`crate::gpp`], checked against the `iab_gpp` crate in tests)
//! behind a small per-shard verdict cache ([`GppCache`], keyed by the string's hash, so a
//! repeated GPP string costs a lookup).
//! State is per shard (the cache), owned by that shard's core. Must never: fail open — a signal
//! that says "applies" but cannot be read means contextual only.

use codec::ValidRequest;
use codec::bounded::fnv1a;
#[cfg(test)]
use iab_gpp::sections::SectionId;
#[cfg(test)]
use iab_gpp::sections::us_common::OptOut;
#[cfg(test)]
use iab_gpp::v1::GPPString;

/// Who we are in the consent frameworks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivacyConfig {
    /// Our vendor id in the IAB Global Vendor List (TCF vendor consent is checked for it).
    pub vendor_id: u16,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        // A placeholder id: deployments set their own GVL id.
        PrivacyConfig { vendor_id: 1 }
    }
}

/// Why a request is contextual only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restriction {
    Coppa,
    /// GDPR applies and the TCF string is missing, unreadable, or lacks purpose 1/3/4 or our
    /// vendor consent.
    Tcf,
    /// US privacy string says the user opted out of sale.
    UsPrivacy,
    /// A GPP section opted out (sale, sharing or targeted advertising), or GPP is unreadable.
    Gpp,
}

/// The verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privacy {
    /// Personal data may be used: profile, frequency data, user id in events.
    Personalized,
    /// Contextual targeting only.
    Contextual(Restriction),
}

impl Privacy {
    pub fn personalized(self) -> bool {
        self == Privacy::Personalized
    }

    /// Evaluates every signal of `req`; any restriction wins.
    pub fn evaluate(req: &ValidRequest<'_>, cfg: &PrivacyConfig, gpp: &mut GppCache) -> Privacy {
        let r = req.req();
        if r.regs.as_ref().and_then(|g| g.coppa) == Some(1) {
            return Privacy::Contextual(Restriction::Coppa);
        }
        if r.gdpr() == Some(1) {
            let ok = r
                .consent()
                .and_then(Tcf::parse)
                .is_some_and(|t| t.allows_personalised_ads(cfg.vendor_id));
            if !ok {
                return Privacy::Contextual(Restriction::Tcf);
            }
        }
        if r.us_privacy().is_some_and(us_privacy_opted_out) {
            return Privacy::Contextual(Restriction::UsPrivacy);
        }
        if let Some(regs) = &r.regs
            && let Some(g) = regs.gpp.as_deref()
            && !gpp.allows(g, &regs.gpp_sid, cfg.vendor_id)
        {
            return Privacy::Contextual(Restriction::Gpp);
        }
        Privacy::Personalized
    }
}

/// `1YYN`: version 1, notice given, opted out of sale (third char), LSPA. `Y` in the third
/// place means opted out; `-` means not applicable. Unreadable strings are ignored (the CCPA
/// signal is opt-out based).
pub fn us_privacy_opted_out(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 4 && b[0] == b'1' && (b[2] == b'Y' || b[2] == b'y')
}

fn b64(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' | b'+' => 62,
        b'_' | b'/' => 63,
        _ => return None,
    } as u32)
}

/// Bits of a base64url string, read without decoding it into a buffer.
#[derive(Debug, Clone, Copy)]
struct Bits64<'a>(&'a [u8]);

impl Bits64<'_> {
    fn len(&self) -> usize {
        self.0.len() * 6
    }
    fn bit(&self, p: usize) -> Option<bool> {
        let v = b64(*self.0.get(p / 6)?)?;
        Some((v >> (5 - p % 6)) & 1 == 1)
    }
    fn int(&self, p: usize, n: usize) -> Option<u64> {
        debug_assert!(n <= 64);
        let mut v = 0u64;
        for i in 0..n {
            v = (v << 1) | u64::from(self.bit(p + i)?);
        }
        Some(v)
    }
}

const PURPOSES: usize = 152;
const MAX_VENDOR: usize = 213;
const IS_RANGE: usize = 229;
const VENDORS: usize = 230;

/// A TCF v2 core string (the part before the first `.`), read in place.
#[derive(Debug, Clone, Copy)]
pub struct Tcf<'a> {
    bits: Bits64<'a>,
}

impl<'a> Tcf<'a> {
    /// Checks the version (2) and that the fixed fields and vendor header are present.
    pub fn parse(s: &'a str) -> Option<Tcf<'a>> {
        let core = s.split('.').next()?;
        let t = Tcf {
            bits: Bits64(core.as_bytes()),
        };
        if t.bits.int(0, 6)? != 2 || t.bits.len() < VENDORS {
            return None;
        }
        // Every character must be base64url.
        if !core.bytes().all(|c| b64(c).is_some()) {
            return None;
        }
        Some(t)
    }
    pub fn cmp_id(&self) -> u16 {
        self.bits.int(78, 12).unwrap_or(0) as u16
    }
    pub fn vendor_list_version(&self) -> u16 {
        self.bits.int(120, 12).unwrap_or(0) as u16
    }
    /// Consent for purpose `p` (1–24).
    pub fn purpose(&self, p: usize) -> bool {
        (1..=24).contains(&p) && self.bits.bit(PURPOSES + p - 1) == Some(true)
    }
    /// Consent for vendor `v` (bit field or range encoding). Unreadable = no.
    pub fn vendor(&self, v: u16) -> bool {
        self.vendor_inner(v).unwrap_or(false)
    }
    fn vendor_inner(&self, v: u16) -> Option<bool> {
        let max = self.bits.int(MAX_VENDOR, 16)? as u16;
        if v == 0 || v > max {
            return Some(false);
        }
        if !self.bits.bit(IS_RANGE)? {
            return self.bits.bit(VENDORS + v as usize - 1);
        }
        let n = self.bits.int(VENDORS, 12)? as usize;
        let mut p = VENDORS + 12;
        for _ in 0..n {
            let range = self.bits.bit(p)?;
            let start = self.bits.int(p + 1, 16)? as u16;
            p += 17;
            let end = if range {
                let e = self.bits.int(p, 16)? as u16;
                p += 16;
                e
            } else {
                start
            };
            if (start..=end).contains(&v) {
                return Some(true);
            }
        }
        Some(false)
    }
    /// Purposes 1 (store/access), 3 (create a personalised ads profile), 4 (select personalised
    /// ads) and our vendor consent.
    pub fn allows_personalised_ads(&self, vendor: u16) -> bool {
        self.purpose(1) && self.purpose(3) && self.purpose(4) && self.vendor(vendor)
    }
}

const GPP_CACHE: usize = 256;

/// Per-shard cache of GPP verdicts, direct-mapped by the hash of (string, gpp_sid).
#[derive(Debug)]
pub struct GppCache {
    slots: Box<[(u64, bool)]>,
    /// Decodes done (misses); hits cost no allocation.
    pub decodes: u64,
}

impl Default for GppCache {
    fn default() -> Self {
        GppCache {
            slots: vec![(0, false); GPP_CACHE].into_boxed_slice(),
            decodes: 0,
        }
    }
}

impl GppCache {
    /// True when no applicable section restricts personalised ads.
    pub fn allows(&mut self, gpp: &str, sid: &[u16], vendor: u16) -> bool {
        let mut h = fnv1a(gpp.as_bytes()) ^ u64::from(vendor).rotate_left(17);
        for s in sid {
            h = (h ^ u64::from(*s)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let h = h | 1; // 0 marks an empty slot
        let slot = (h as usize) % GPP_CACHE;
        if self.slots[slot].0 == h {
            return self.slots[slot].1;
        }
        self.decodes += 1;
        let v = gpp_allows(gpp, sid, vendor);
        self.slots[slot] = (h, v);
        v
    }
}

/// Whether a GPP string allows personalised ads: [`crate::gpp::allows`] (zero allocation).
/// Sections considered: those in `sid` (or all present when `sid` is empty). Unreadable string
/// or applicable section = no.
pub fn gpp_allows(gpp: &str, sid: &[u16], vendor: u16) -> bool {
    crate::gpp::allows(gpp, sid, vendor)
}

/// The same verdict through the `iab_gpp` crate (allocates; the request path used it until
/// issue #4): the reference the zero-allocation reader is compared with. A panic inside the
/// crate (its Fibonacci reader overflows on some hostile headers in debug builds) counts as
/// unreadable.
#[cfg(test)]
pub(crate) fn gpp_allows_reference(gpp: &str, sid: &[u16], vendor: u16) -> bool {
    std::panic::catch_unwind(|| iab_gpp_allows(gpp, sid, vendor)).unwrap_or(false)
}

#[cfg(test)]
fn opted_out(o: &OptOut) -> bool {
    *o == OptOut::OptedOut
}

/// State sections: opted out of sale or of targeted advertising.
#[cfg(test)]
fn state(sale: &OptOut, targeted: &OptOut) -> bool {
    opted_out(sale) || opted_out(targeted)
}

#[cfg(test)]
fn iab_gpp_allows(gpp: &str, sid: &[u16], vendor: u16) -> bool {
    use iab_gpp::sections::Section;
    let Ok(g) = GPPString::parse_str(gpp) else {
        return false;
    };
    let ids: Vec<SectionId> = g.section_ids().copied().collect();
    for id in ids {
        let n = id as u16;
        if !sid.is_empty() && !sid.contains(&n) {
            continue;
        }
        if id == SectionId::TcfEuV2 {
            // Our own reader (same bits as user.consent) decides the EU section.
            let ok = g
                .section(id)
                .and_then(Tcf::parse)
                .is_some_and(|t| t.allows_personalised_ads(vendor));
            if !ok {
                return false;
            }
            continue;
        }
        let Ok(sec) = g.decode_section(id) else {
            // Applicable but unreadable: fail closed.
            return false;
        };
        let out = match &sec {
            Section::UspV1(u) => u.opt_out_sale == iab_gpp::sections::uspv1::Flag::Yes,
            Section::UsNat(s) => match &s.core {
                iab_gpp::sections::usnat::Core::V1(c) => {
                    opted_out(&c.sale_opt_out)
                        || opted_out(&c.sharing_opt_out)
                        || opted_out(&c.targeted_advertising_opt_out)
                }
                iab_gpp::sections::usnat::Core::V2(c) => {
                    opted_out(&c.sale_opt_out)
                        || opted_out(&c.sharing_opt_out)
                        || opted_out(&c.targeted_advertising_opt_out)
                }
                _ => true,
            },
            Section::UsCa(s) => {
                opted_out(&s.core.sale_opt_out) || opted_out(&s.core.sharing_opt_out)
            }
            Section::UsVa(s) => state(&s.core.sale_opt_out, &s.core.targeted_advertising_opt_out),
            Section::UsCo(s) => state(&s.core.sale_opt_out, &s.core.targeted_advertising_opt_out),
            Section::UsUt(s) => state(&s.core.sale_opt_out, &s.core.targeted_advertising_opt_out),
            Section::UsCt(s) => state(&s.core.sale_opt_out, &s.core.targeted_advertising_opt_out),
            Section::UsFl(s) => state(&s.core.sale_opt_out, &s.core.targeted_advertising_opt_out),
            Section::UsMt(s) => state(&s.core.sale_opt_out, &s.core.targeted_advertising_opt_out),
            Section::UsOr(s) => state(&s.core.sale_opt_out, &s.core.targeted_advertising_opt_out),
            Section::UsTx(s) => state(&s.core.sale_opt_out, &s.core.targeted_advertising_opt_out),
            Section::UsDe(s) => state(&s.core.sale_opt_out, &s.core.targeted_advertising_opt_out),
            Section::UsIa(s) => state(&s.core.sale_opt_out, &s.core.targeted_advertising_opt_out),
            Section::UsNe(s) => state(&s.core.sale_opt_out, &s.core.targeted_advertising_opt_out),
            Section::UsNh(s) => state(&s.core.sale_opt_out, &s.core.targeted_advertising_opt_out),
            Section::UsNj(s) => state(&s.core.sale_opt_out, &s.core.targeted_advertising_opt_out),
            Section::UsTn(s) => state(&s.core.sale_opt_out, &s.core.targeted_advertising_opt_out),
            Section::UsMn(s) => state(&s.core.sale_opt_out, &s.core.targeted_advertising_opt_out),
            // Canada's TCF and the retired EU v1 do not govern our (EU/US) use of the data.
            Section::TcfCaV1(_) | Section::TcfEuV1(_) => false,
            // A section kind added to the crate later: restrict until it is read (fail closed).
            _ => true,
        };
        if out {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From the IAB TCF v2 specification examples (also in iab_gpp's test data): purposes 1–3,
    /// vendors 2, 6, 8.
    const IAB_EXAMPLE: &str = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA";
    /// From the GPP examples: a TCF EU v2 section with no purposes and no vendors.
    const EMPTY_CONSENT: &str = "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA";

    /// Test-only encoder: a minimal TCF v2 core string with the given purposes and vendors.
    fn encode(purposes: &[usize], vendors: &[u16], range: bool) -> String {
        let mut bits: Vec<bool> = Vec::new();
        let push = |v: u64, n: usize, bits: &mut Vec<bool>| {
            for i in (0..n).rev() {
                bits.push((v >> i) & 1 == 1);
            }
        };
        push(2, 6, &mut bits);
        push(16_000_000_000, 36, &mut bits);
        push(16_000_000_000, 36, &mut bits);
        push(31, 12, &mut bits);
        push(1, 12, &mut bits);
        push(1, 6, &mut bits);
        push(4 * 32 + 13, 12, &mut bits); // "EN"
        push(126, 12, &mut bits);
        push(2, 6, &mut bits);
        push(0, 2, &mut bits);
        push(0, 12, &mut bits);
        for p in 1..=24 {
            bits.push(purposes.contains(&p));
        }
        push(0, 24, &mut bits);
        push(0, 1, &mut bits);
        push(3 * 32 + 4, 12, &mut bits); // "DE"
        let max = vendors.iter().copied().max().unwrap_or(0);
        push(u64::from(max), 16, &mut bits);
        if range {
            bits.push(true);
            push(vendors.len() as u64, 12, &mut bits);
            for v in vendors {
                bits.push(false);
                push(u64::from(*v), 16, &mut bits);
            }
        } else {
            bits.push(false);
            for v in 1..=max {
                bits.push(vendors.contains(&v));
            }
        }
        // Vendor legitimate interests (none) and publisher restrictions (none).
        push(0, 16, &mut bits);
        push(0, 1, &mut bits);
        push(0, 12, &mut bits);
        while !bits.len().is_multiple_of(6) {
            bits.push(false);
        }
        let alpha = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        bits.chunks(6)
            .map(|c| alpha[c.iter().fold(0, |a, b| (a << 1) | usize::from(*b))] as char)
            .collect()
    }

    #[test]
    fn reads_the_iab_example_string() {
        let t = Tcf::parse(IAB_EXAMPLE).unwrap();
        assert!(t.purpose(1) && t.purpose(2) && t.purpose(3) && !t.purpose(4));
        assert!(t.vendor(2) && t.vendor(6) && t.vendor(8));
        assert!(!t.vendor(1) && !t.vendor(7) && !t.vendor(9));
        // Purpose 4 is missing: no personalised ads even for a consented vendor.
        assert!(!t.allows_personalised_ads(2));
        let e = Tcf::parse(EMPTY_CONSENT).unwrap();
        assert_eq!(e.cmp_id(), 31);
        assert_eq!(e.vendor_list_version(), 126);
        assert!(!e.purpose(1) && !e.vendor(1));
    }

    #[test]
    fn agrees_with_iab_gpp_on_real_and_generated_strings() {
        use std::str::FromStr;
        let generated = [
            encode(&[1, 3, 4], &[755], true),
            encode(&[1, 2, 3, 4, 7], &[1, 5, 755, 1000], false),
            encode(&[1, 4], &[755], false),
        ];
        let mut all = vec![IAB_EXAMPLE.to_string(), EMPTY_CONSENT.to_string()];
        all.extend(generated);
        for s in &all {
            let ours = Tcf::parse(s).unwrap();
            let theirs = iab_gpp::sections::tcfeuv2::TcfEuV2::from_str(s).unwrap();
            for p in 1..=24u8 {
                assert_eq!(
                    ours.purpose(p as usize),
                    theirs.core.purpose_consents.contains(&u16::from(p)),
                    "{s} purpose {p}"
                );
            }
            for v in 1..=1100u16 {
                assert_eq!(
                    ours.vendor(v),
                    theirs.core.vendor_consents.contains(&v),
                    "{s} vendor {v}"
                );
            }
        }
        assert!(Tcf::parse(&all[2]).unwrap().allows_personalised_ads(755));
        assert!(!Tcf::parse(&all[4]).unwrap().allows_personalised_ads(755));
    }

    #[test]
    fn refuses_garbage_and_v1() {
        assert!(Tcf::parse("").is_none());
        assert!(Tcf::parse("not base64 !!").is_none());
        assert!(Tcf::parse("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA").is_none()); // TCF v1
        assert!(Tcf::parse("CPX").is_none());
    }

    fn verdict(json: &str, vendor: u16) -> Privacy {
        let req = codec::decode_valid(json.as_bytes()).unwrap();
        Privacy::evaluate(
            &req,
            &PrivacyConfig { vendor_id: vendor },
            &mut GppCache::default(),
        )
    }

    #[test]
    fn each_signal_restricts() {
        let imp = r#""id":"r","imp":[{"id":"1","banner":{"w":1,"h":1}}]"#;
        assert_eq!(verdict(&format!("{{{imp}}}"), 755), Privacy::Personalized);
        assert_eq!(
            verdict(&format!(r#"{{{imp},"regs":{{"coppa":1}}}}"#), 755),
            Privacy::Contextual(Restriction::Coppa)
        );
        assert_eq!(
            verdict(&format!(r#"{{{imp},"regs":{{"gdpr":1}}}}"#), 755),
            Privacy::Contextual(Restriction::Tcf)
        );
        let good = encode(&[1, 3, 4], &[755], true);
        assert_eq!(
            verdict(
                &format!(r#"{{{imp},"regs":{{"gdpr":1}},"user":{{"consent":"{good}"}}}}"#),
                755
            ),
            Privacy::Personalized
        );
        assert_eq!(
            verdict(
                &format!(r#"{{{imp},"regs":{{"gdpr":1}},"user":{{"consent":"{good}"}}}}"#),
                756
            ),
            Privacy::Contextual(Restriction::Tcf)
        );
        assert_eq!(
            verdict(&format!(r#"{{{imp},"regs":{{"us_privacy":"1YYN"}}}}"#), 755),
            Privacy::Contextual(Restriction::UsPrivacy)
        );
        assert_eq!(
            verdict(&format!(r#"{{{imp},"regs":{{"us_privacy":"1YNN"}}}}"#), 755),
            Privacy::Personalized
        );
    }

    #[test]
    fn gpp_us_sections_and_tcf_section() {
        // Strings from the GPP specification examples (iab_gpp test data).
        let usnat_opted_out = "DBABLA~BVVVVVVVVWA";
        let usnat_na = "DBABLA~BAAAAAAAAQA";
        let usca_opted_out = "DBABBg~BVVVVVVY";
        let usp_in_gpp = "DBABTA~1YNN";
        let tcf_no_consent = "DBABM~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA";
        assert!(!gpp_allows(usnat_opted_out, &[7], 755));
        assert!(gpp_allows(usnat_na, &[7], 755));
        assert!(!gpp_allows(usca_opted_out, &[8], 755));
        assert!(gpp_allows(usp_in_gpp, &[6], 755));
        assert!(!gpp_allows(tcf_no_consent, &[2], 755));
        // Sections not applicable by gpp_sid are ignored.
        assert!(gpp_allows(usnat_opted_out, &[8], 755));
        assert!(!gpp_allows("garbage", &[7], 755));

        let mut cache = GppCache::default();
        assert!(!cache.allows(usnat_opted_out, &[7], 755));
        assert!(!cache.allows(usnat_opted_out, &[7], 755));
        assert_eq!(cache.decodes, 1);
        let imp = r#""id":"r","imp":[{"id":"1","banner":{"w":1,"h":1}}]"#;
        assert_eq!(
            verdict(
                &format!(r#"{{{imp},"regs":{{"gpp":"{usnat_opted_out}","gpp_sid":[7]}}}}"#),
                755
            ),
            Privacy::Contextual(Restriction::Gpp)
        );
    }
}
