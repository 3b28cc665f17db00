//! The campaign model as loaded (JSON or TOML): advertiser → campaigns → creatives.
//!
//! Owns: the source types ([`CampaignSet`], [`Advertiser`], [`Campaign`], [`Creative`]), their
//! parsing with errors that name the line (syntax and type errors) or the field path (rule
//! errors), and the rules a set must meet ([`validate`]). A bad set is refused whole; the
//! compiled form lives in [`crate::index`]. Built on a control thread, never on a bidding core's
//! request path; must never be mutated once compiled.
//!
//! The model is documented with a full example in `docs/CAMPAIGNS.md`.

use std::collections::HashSet;

use serde::Deserialize;

/// Creative format.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Format {
    Banner { w: u32, h: u32 },
    Video,
    Native,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Creative {
    pub id: u32,
    pub format: Format,
    /// Advertiser domains shown in the ad (checked against `badv`).
    #[serde(default)]
    pub adomain: Vec<String>,
    /// IAB content categories of the ad (checked against `bcat`).
    #[serde(default)]
    pub cat: Vec<String>,
    /// Creative attributes (AdCOM list 5; checked against `battr`).
    #[serde(default)]
    pub attr: Vec<u16>,
    /// Bundle of the advertised app, if any (checked against `bapp`).
    #[serde(default)]
    pub bundle: Option<String>,
    /// Ad markup returned in the bid.
    pub adm: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Paused,
    Archived,
}

/// How a campaign spends its daily budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pacing {
    /// Follow a straight target curve over the advertiser's day, catching up when behind.
    #[default]
    Even,
    /// Spend as fast as the traffic allows; leases are simply refilled.
    Asap,
}

/// What to do when user data needed for a frequency cap is missing or too stale to trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StalePolicy {
    /// No bid (reason `frequency_capped`), counted.
    #[default]
    Closed,
    /// Bid as if the user had seen nothing, counted.
    Open,
}

/// At most `impressions` per user in any `window_s` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    pub impressions: u32,
    pub window_s: u64,
}

/// Multiplies the base CPM when the user is in `segment` (10,000 basis points = ×1).
/// The effect scales with the user's weight in the segment (0–1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentMultiplier {
    pub segment: u32,
    pub multiplier_bp: u32,
}

/// Hours of the week in the advertiser's time zone. `days`: 0 = Monday … 6 = Sunday (empty =
/// every day); hours `start_hour..end_hour` (end exclusive, 24 = end of day).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DayPart {
    #[serde(default)]
    pub days: Vec<u8>,
    pub start_hour: u8,
    pub end_hour: u8,
}

/// Targeting: every non-empty list must match; an empty list matches everything.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targeting {
    /// ISO-3166-1 alpha-3 (`device.geo.country`).
    #[serde(default)]
    pub countries: Vec<String>,
    /// `device.geo.region` values (ISO-3166-2 subdivision, e.g. `CA`, `BY`).
    #[serde(default)]
    pub regions: Vec<String>,
    /// `device.geo.city` values.
    #[serde(default)]
    pub cities: Vec<String>,
    /// OpenRTB device types (1 mobile/tablet, 2 PC, 3 CTV, 4 phone, 5 tablet, 6 connected, 7 STB).
    #[serde(default)]
    pub device_types: Vec<u8>,
    /// `device.os`, case-insensitive (`ios`, `android`, `windows` …).
    #[serde(default)]
    pub os: Vec<String>,
    /// Only these site domains. A campaign with an allow list for sites only does not bid on apps
    /// (and the other way round); with both lists it bids on either.
    #[serde(default)]
    pub domains_allow: Vec<String>,
    #[serde(default)]
    pub domains_deny: Vec<String>,
    /// Only these app bundles.
    #[serde(default)]
    pub bundles_allow: Vec<String>,
    #[serde(default)]
    pub bundles_deny: Vec<String>,
    /// IAB content categories of the site/app (`site.cat`/`app.cat`): at least one must match.
    #[serde(default)]
    pub categories_allow: Vec<String>,
    /// No bid when the site/app carries any of these categories.
    #[serde(default)]
    pub categories_deny: Vec<String>,
    /// The user must be in at least one of these profile segments (needs consent and a profile).
    #[serde(default)]
    pub segments: Vec<u32>,
    /// Minimum weight (0–1000) for a segment to count.
    #[serde(default)]
    pub min_segment_weight: u16,
    /// Deal ids this campaign may bid on.
    #[serde(default)]
    pub deals: Vec<String>,
    /// Bid only through one of `deals` (never in the open auction).
    #[serde(default)]
    pub deals_only: bool,
    /// Hours of the week (advertiser's time zone); empty = always.
    #[serde(default)]
    pub dayparts: Vec<DayPart>,
    /// Bid only on secure (`imp.secure = 1`) imps.
    #[serde(default)]
    pub secure_only: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    pub id: u32,
    /// Filled from the enclosing advertiser when nested; required in the flat form.
    #[serde(default)]
    pub advertiser_id: u32,
    #[serde(default)]
    pub name: String,
    pub status: Status,
    /// Flight start and end, unix seconds (UTC); absent = open-ended.
    #[serde(default)]
    pub start_unix_s: Option<u64>,
    #[serde(default)]
    pub end_unix_s: Option<u64>,
    /// Fixed bid, or the base of the segment-multiplier strategy: CPM in micros of USD.
    pub bid_cpm_micros: i64,
    /// Cap of the segment-multiplier strategy (and the most a floor may raise the bid to).
    #[serde(default)]
    pub max_cpm_micros: Option<i64>,
    /// Non-empty = the base × segment multipliers strategy.
    #[serde(default)]
    pub segment_multipliers: Vec<SegmentMultiplier>,
    /// Total budget in micros of USD.
    pub total_budget_micros: i64,
    #[serde(default)]
    pub daily_budget_micros: Option<i64>,
    #[serde(default)]
    pub pacing: Pacing,
    #[serde(default)]
    pub frequency_cap: Option<FrequencyCap>,
    /// When frequency data is missing or older than `max_profile_age_ms`.
    #[serde(default)]
    pub stale_profile: StalePolicy,
    #[serde(default = "default_max_profile_age_ms")]
    pub max_profile_age_ms: u64,
    /// First-price bid shading (off by default).
    #[serde(default)]
    pub shading: bool,
    /// Legacy shorthand for `targeting.countries` (merged into it).
    #[serde(default)]
    pub countries: Vec<String>,
    #[serde(default)]
    pub targeting: Targeting,
    pub creatives: Vec<Creative>,
}

fn default_max_profile_age_ms() -> u64 {
    10_000
}

/// An advertiser and its campaigns.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Advertiser {
    pub id: u32,
    #[serde(default)]
    pub name: String,
    /// The advertiser's time zone as a fixed offset from UTC in minutes (no daylight saving).
    #[serde(default)]
    pub utc_offset_minutes: i32,
    #[serde(default)]
    pub campaigns: Vec<Campaign>,
}

/// The campaigns file: `{"version": N, "advertisers": [...], "campaigns": [...]}`.
/// Nested campaigns (under an advertiser) and flat ones (with `advertiser_id`) may be mixed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSet {
    pub version: u64,
    #[serde(default)]
    pub advertisers: Vec<Advertiser>,
    #[serde(default)]
    pub campaigns: Vec<Campaign>,
}

/// Why a campaign set was refused. Every variant names where.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Syntax or type error: serde's message carries line and column; `path` is the field.
    #[error("campaigns: {path}: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("campaigns (TOML): {0}")]
    Toml(#[from] toml::de::Error),
    #[error("campaign {campaign}: {field}: {problem}")]
    Invalid {
        campaign: u32,
        field: &'static str,
        problem: String,
    },
    #[error("advertiser {advertiser}: {problem}")]
    Advertiser { advertiser: u32, problem: String },
    #[error("campaigns: {0}")]
    Io(#[from] std::io::Error),
}

impl LoadError {
    /// Line (1-based) of a syntax/type error, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            LoadError::Json { source, .. } => Some(source.line()),
            _ => None,
        }
    }
}

impl CampaignSet {
    /// Parses JSON; errors name the line, column and field path (`advertisers[0].campaigns[2].status`).
    pub fn from_json(bytes: &[u8]) -> Result<CampaignSet, LoadError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(de).map_err(|e| LoadError::Json {
            path: e.path().to_string(),
            source: e.into_inner(),
        })
    }

    /// Parses TOML (`[[advertisers]]`, `[[advertisers.campaigns]]` …); errors name line and column.
    pub fn from_toml(text: &str) -> Result<CampaignSet, LoadError> {
        Ok(toml::from_str(text)?)
    }

    /// Reads a file: `.toml` as TOML, anything else as JSON.
    pub fn from_path(path: &std::path::Path) -> Result<CampaignSet, LoadError> {
        let bytes = std::fs::read(path)?;
        if path.extension().is_some_and(|e| e == "toml") {
            let text = String::from_utf8(bytes).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error())
            })?;
            Self::from_toml(&text)
        } else {
            Self::from_json(&bytes)
        }
    }

    /// Flattens advertisers' campaigns into one list (advertiser id filled in, legacy
    /// `countries` merged into targeting) and returns it with each campaign's UTC offset.
    pub fn flatten(self) -> Result<(u64, Vec<Campaign>, Vec<i32>), LoadError> {
        let mut offsets_by_adv = std::collections::HashMap::new();
        let mut campaigns = Vec::new();
        let mut offsets = Vec::new();
        for a in &self.advertisers {
            if !(-14 * 60..=14 * 60).contains(&a.utc_offset_minutes) {
                return Err(LoadError::Advertiser {
                    advertiser: a.id,
                    problem: "utc_offset_minutes must be within ±840".into(),
                });
            }
            if offsets_by_adv.insert(a.id, a.utc_offset_minutes).is_some() {
                return Err(LoadError::Advertiser {
                    advertiser: a.id,
                    problem: "duplicate advertiser id".into(),
                });
            }
        }
        for a in self.advertisers {
            for mut c in a.campaigns {
                if c.advertiser_id != 0 && c.advertiser_id != a.id {
                    return Err(LoadError::Invalid {
                        campaign: c.id,
                        field: "advertiser_id",
                        problem: format!(
                            "nested under advertiser {} but says {}",
                            a.id, c.advertiser_id
                        ),
                    });
                }
                c.advertiser_id = a.id;
                campaigns.push(c);
                offsets.push(a.utc_offset_minutes);
            }
        }
        for c in self.campaigns {
            if c.advertiser_id == 0 {
                return Err(LoadError::Invalid {
                    campaign: c.id,
                    field: "advertiser_id",
                    problem: "required for a campaign outside an advertiser".into(),
                });
            }
            let off = match offsets_by_adv.get(&c.advertiser_id) {
                Some(o) => *o,
                None if offsets_by_adv.is_empty() => 0,
                None => {
                    return Err(LoadError::Invalid {
                        campaign: c.id,
                        field: "advertiser_id",
                        problem: format!("advertiser {} is not in the set", c.advertiser_id),
                    });
                }
            };
            campaigns.push(c);
            offsets.push(off);
        }
        for c in &mut campaigns {
            let legacy = std::mem::take(&mut c.countries);
            for k in legacy {
                if !c.targeting.countries.contains(&k) {
                    c.targeting.countries.push(k);
                }
            }
        }
        Ok((self.version, campaigns, offsets))
    }
}

/// Most creatives per campaign and entries per targeting list: bounds the per-candidate work.
pub const MAX_CREATIVES: usize = 64;
pub const MAX_LIST: usize = 10_000;
pub const MAX_CAMPAIGNS: usize = 1_000_000;

/// Checks every rule of a flattened set; the first broken rule refuses the whole set.
pub fn validate(campaigns: &[Campaign]) -> Result<(), LoadError> {
    if campaigns.len() > MAX_CAMPAIGNS {
        return Err(LoadError::Invalid {
            campaign: 0,
            field: "campaigns",
            problem: format!("more than {MAX_CAMPAIGNS} campaigns"),
        });
    }
    let mut seen = HashSet::new();
    for c in campaigns {
        let bad = |field: &'static str, problem: &str| LoadError::Invalid {
            campaign: c.id,
            field,
            problem: problem.to_owned(),
        };
        if c.id == 0 {
            return Err(bad("id", "must be > 0"));
        }
        if !seen.insert(c.id) {
            return Err(bad("id", "duplicate campaign id"));
        }
        let max = codec::money::MAX_CPM_MICROS;
        if c.bid_cpm_micros <= 0 || c.bid_cpm_micros > max {
            return Err(bad("bid_cpm_micros", "must be > 0 and <= 10^12"));
        }
        if let Some(m) = c.max_cpm_micros
            && (m < c.bid_cpm_micros || m > max)
        {
            return Err(bad(
                "max_cpm_micros",
                "must be >= bid_cpm_micros and <= 10^12",
            ));
        }
        if !c.segment_multipliers.is_empty() && c.max_cpm_micros.is_none() {
            return Err(bad(
                "max_cpm_micros",
                "required with segment_multipliers (the strategy's cap)",
            ));
        }
        if c.segment_multipliers
            .iter()
            .any(|m| m.multiplier_bp > 100_000)
        {
            return Err(bad(
                "segment_multipliers",
                "multiplier_bp must be <= 100000 (×10)",
            ));
        }
        if c.total_budget_micros < 0 {
            return Err(bad("total_budget_micros", "must be >= 0"));
        }
        if c.daily_budget_micros.is_some_and(|d| d <= 0) {
            return Err(bad("daily_budget_micros", "must be > 0 when given"));
        }
        if let (Some(s), Some(e)) = (c.start_unix_s, c.end_unix_s)
            && e <= s
        {
            return Err(bad("end_unix_s", "must be after start_unix_s"));
        }
        if let Some(f) = c.frequency_cap
            && (f.impressions == 0 || f.window_s == 0 || f.window_s > 90 * 86_400)
        {
            return Err(bad(
                "frequency_cap",
                "impressions must be > 0 and window_s within 1..=7776000",
            ));
        }
        if c.creatives.is_empty() {
            return Err(bad("creatives", "a campaign needs at least one creative"));
        }
        if c.creatives.len() > MAX_CREATIVES {
            return Err(bad("creatives", "more than 64 creatives"));
        }
        let mut cr_ids = HashSet::new();
        for cr in &c.creatives {
            if !cr_ids.insert(cr.id) {
                return Err(bad(
                    "creatives[].id",
                    "duplicate creative id in the campaign",
                ));
            }
            if let Format::Banner { w, h } = cr.format
                && (w == 0 || h == 0 || w > 10_000 || h > 10_000)
            {
                return Err(bad(
                    "creatives[].format",
                    "banner w and h must be 1..=10000",
                ));
            }
            if cr.adm.is_empty() {
                return Err(bad("creatives[].adm", "empty markup"));
            }
        }
        let t = &c.targeting;
        for k in &t.countries {
            if k.len() != 3 || !k.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(bad("targeting.countries", "ISO-3166-1 alpha-3, upper case"));
            }
        }
        for d in &t.device_types {
            if !(1..=7).contains(d) {
                return Err(bad("targeting.device_types", "OpenRTB device type 1..=7"));
            }
        }
        for p in &t.dayparts {
            if p.start_hour >= p.end_hour || p.end_hour > 24 || p.days.iter().any(|d| *d > 6) {
                return Err(bad(
                    "targeting.dayparts",
                    "start_hour < end_hour <= 24, days 0 (Monday)..=6",
                ));
            }
        }
        if t.min_segment_weight > 1000 {
            return Err(bad("targeting.min_segment_weight", "0..=1000"));
        }
        if t.deals_only && t.deals.is_empty() {
            return Err(bad("targeting.deals_only", "needs targeting.deals"));
        }
        let lens = [
            t.countries.len(),
            t.regions.len(),
            t.cities.len(),
            t.os.len(),
            t.domains_allow.len(),
            t.domains_deny.len(),
            t.bundles_allow.len(),
            t.bundles_deny.len(),
            t.categories_allow.len(),
            t.categories_deny.len(),
            t.segments.len(),
            t.deals.len(),
        ];
        if lens.iter().any(|l| *l > MAX_LIST) {
            return Err(bad("targeting", "a list has more than 10000 entries"));
        }
    }
    Ok(())
}
