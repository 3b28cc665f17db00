//! Money as integers: [`Micros`] (millionths of a currency unit) and ISO 4217 [`Currency`].
//!
//! OpenRTB carries prices as JSON floats (CPM). They become integers at the edge (decode) and
//! go back to decimal text at the edge (encode); nothing in between ever holds money in a float.

use std::fmt;

/// Millionths of a currency unit. As a CPM, 1.25 USD CPM = `Micros(1_250_000)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Micros(pub i64);

/// The largest CPM accepted anywhere (1,000,000 units): larger is a typo or an attack.
pub const MAX_CPM_MICROS: i64 = 1_000_000 * 1_000_000;

impl Micros {
    pub const ZERO: Micros = Micros(0);

    /// Converts a decoded float price. `None` for NaN, infinities, negatives and values above
    /// [`MAX_CPM_MICROS`]. Rounds to the nearest micro.
    pub fn from_f64(v: f64) -> Option<Micros> {
        if !v.is_finite() || v < 0.0 {
            return None;
        }
        let m = (v * 1_000_000.0).round();
        if m > MAX_CPM_MICROS as f64 {
            return None;
        }
        Some(Micros(m as i64))
    }

    /// Writes the decimal form (`1.25`, `0.000001`, `3`) without floats.
    pub fn write_decimal(self, out: &mut Vec<u8>) {
        let mut v = self.0;
        if v < 0 {
            out.push(b'-');
            v = v.checked_neg().unwrap_or(i64::MAX);
        }
        let units = v / 1_000_000;
        let frac = v % 1_000_000;
        let mut b = itoa::Buffer::new();
        out.extend_from_slice(b.format(units).as_bytes());
        if frac != 0 {
            out.push(b'.');
            let digits = [
                frac / 100_000,
                frac / 10_000 % 10,
                frac / 1_000 % 10,
                frac / 100 % 10,
                frac / 10 % 10,
                frac % 10,
            ];
            let mut last = digits.len();
            while last > 0 && digits[last - 1] == 0 {
                last -= 1;
            }
            for d in &digits[..last] {
                out.push(b'0' + *d as u8);
            }
        }
    }

    pub fn saturating_add(self, o: Micros) -> Micros {
        Micros(self.0.saturating_add(o.0))
    }
    pub fn saturating_sub(self, o: Micros) -> Micros {
        Micros(self.0.saturating_sub(o.0))
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut v = Vec::with_capacity(24);
        self.write_decimal(&mut v);
        f.write_str(std::str::from_utf8(&v).unwrap_or("?"))
    }
}

/// An ISO 4217 code the bidder knows. Only codes in [`Currency::KNOWN`] can be built.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub const USD: Currency = Currency(*b"USD");
    pub const EUR: Currency = Currency(*b"EUR");
    /// Currencies seen on exchanges; anything else is refused as unknown.
    pub const KNOWN: &'static [&'static str] = &[
        "USD", "EUR", "GBP", "JPY", "CNY", "CAD", "AUD", "NZD", "CHF", "SEK", "NOK", "DKK", "PLN",
        "CZK", "HUF", "RON", "BGN", "TRY", "RUB", "UAH", "INR", "IDR", "KRW", "SGD", "HKD", "TWD",
        "THB", "MYR", "PHP", "VND", "BRL", "MXN", "ARS", "CLP", "COP", "PEN", "ZAR", "ILS", "AED",
        "SAR", "EGP", "NGN", "KES",
    ];

    /// Parses a known code (exact upper case, as OpenRTB requires).
    pub fn parse(s: &str) -> Option<Currency> {
        if Self::KNOWN.contains(&s) {
            let b = s.as_bytes();
            Some(Currency([b[0], b[1], b[2]]))
        } else {
            None
        }
    }
    pub fn as_str(&self) -> &str {
        // The bytes come from KNOWN (ASCII) or the constants above.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
    pub fn code(&self) -> [u8; 3] {
        self.0
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(m: i64) -> String {
        let mut v = Vec::new();
        Micros(m).write_decimal(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn decimal_text_has_no_float_noise() {
        assert_eq!(dec(1_250_000), "1.25");
        assert_eq!(dec(3_000_000), "3");
        assert_eq!(dec(1), "0.000001");
        assert_eq!(dec(-500_000), "-0.5");
        assert_eq!(dec(0), "0");
    }

    #[test]
    fn float_prices_round_to_micros_and_refuse_nonsense() {
        assert_eq!(Micros::from_f64(0.1), Some(Micros(100_000)));
        assert_eq!(Micros::from_f64(1.0000004), Some(Micros(1_000_000)));
        assert_eq!(Micros::from_f64(-1.0), None);
        assert_eq!(Micros::from_f64(f64::NAN), None);
        assert_eq!(Micros::from_f64(1e300), None);
    }

    #[test]
    fn only_known_currencies_parse() {
        assert_eq!(Currency::parse("USD"), Some(Currency::USD));
        assert_eq!(Currency::parse("usd"), None);
        assert_eq!(Currency::parse("XXX"), None);
    }
}
