//! Reference data: every airport with an IATA code, with its city and position, for
//! validation, text search and the seed generator.
//!
//! The list is `data/airports.tsv`, made from the `airportsdata` package (MIT licence) by
//! `data/update.py`; `data/README.md` says which rows it keeps and how. It is embedded in the
//! binary and parsed on first use.

use std::sync::LazyLock;

/// One airport of the reference list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Airport {
    /// IATA code, three upper-case letters.
    pub code: &'static str,
    /// Airport name, e.g. `London Heathrow Airport`.
    pub name: &'static str,
    /// City served: the IATA multi-airport city when there is one, else the municipality,
    /// else (for the airstrips the source gives no city) the airport's name. Never empty.
    pub city: &'static str,
    /// Country (ISO 3166-1 alpha-2, plus `XK` for Kosovo).
    pub country: &'static str,
    /// Latitude in decimal degrees, north positive.
    pub latitude: f64,
    /// Longitude in decimal degrees, east positive.
    pub longitude: f64,
}

/// The 64 major airports generated flights fly between (the seed data and the benchmarks):
/// real routes between hubs rather than between random airstrips.
pub const HUBS: &[&str] = &[
    "AMS", "ATH", "ATL", "AUS", "BCN", "BER", "BKK", "BOG", "BOS", "BRU", "CDG", "CPH", "CPT",
    "DEL", "DEN", "DFW", "DOH", "DUB", "DXB", "EWR", "EZE", "FCO", "FRA", "GIG", "GRU", "HEL",
    "HKG", "HND", "IAD", "ICN", "IST", "JFK", "JNB", "LAS", "LAX", "LGA", "LGW", "LHR", "LIS",
    "MAD", "MAN", "MEL", "MEX", "MIA", "MUC", "MXP", "NRT", "ORD", "OSL", "PEK", "PHX", "PRG",
    "PVG", "SEA", "SFO", "SIN", "SYD", "TLV", "VIE", "WAW", "YUL", "YVR", "YYZ", "ZRH",
];

const DATA: &str = include_str!("../data/airports.tsv");

/// The embedded file, parsed on first use.
static AIRPORTS: LazyLock<Vec<Airport>> = LazyLock::new(|| parse(DATA));

/// Every airport of the reference list, sorted by code.
pub fn all() -> &'static [Airport] {
    &AIRPORTS
}

/// The airport with this (upper-case) code.
pub fn lookup(code: &str) -> Option<&'static Airport> {
    let airports = all();
    airports
        .binary_search_by(|airport| airport.code.cmp(code))
        .ok()
        .map(|i| &airports[i])
}

/// The rows that parse, sorted by code, one per code. Malformed rows are skipped rather
/// than failing the service; a test checks the embedded file has none, so a bad refresh of
/// the data fails there.
fn parse(data: &'static str) -> Vec<Airport> {
    // `#` lines are comments; the first other line is the header.
    let mut airports: Vec<Airport> = data
        .lines()
        .filter(|l| !l.starts_with('#'))
        .skip(1)
        .filter_map(parse_row)
        .collect();
    airports.sort_by(|a, b| a.code.cmp(b.code));
    // Lookup needs unique codes; update.py already keeps one row per code.
    airports.dedup_by(|a, b| a.code == b.code);
    airports
}

fn parse_row(line: &'static str) -> Option<Airport> {
    let mut fields = line.split('\t');
    let mut next = || fields.next().filter(|f| !f.is_empty());
    let airport = Airport {
        code: next().filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))?,
        name: next()?,
        city: next()?,
        country: next().filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))?,
        latitude: next()?
            .parse()
            .ok()
            .filter(|l: &f64| (-90.0..=90.0).contains(l))?,
        longitude: next()?
            .parse()
            .ok()
            .filter(|l: &f64| (-180.0..=180.0).contains(l))?,
    };
    fields.next().is_none().then_some(airport)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_of_the_embedded_file_parses() {
        let rows = DATA.lines().filter(|l| !l.starts_with('#')).count() - 1;
        assert_eq!(
            rows - all().len(),
            0,
            "rows skipped as malformed or duplicate"
        );
        assert!((5_000..20_000).contains(&rows), "{rows} airports");
    }

    #[test]
    fn list_is_sorted_and_unique_so_lookup_works() {
        assert!(all().windows(2).all(|w| w[0].code < w[1].code));
        for airport in all() {
            assert_eq!(lookup(airport.code), Some(airport));
            assert!(!airport.name.is_empty() && !airport.city.is_empty());
        }
        for unknown in ["XQX", "ZZZ", "XXX", "jfk", "JF", ""] {
            assert_eq!(lookup(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn airports_beyond_the_hubs_have_their_cities() {
        for (code, city, country) in [
            ("ANC", "Anchorage", "US"),
            ("KEF", "Reykjavik", "IS"),
            ("NAN", "Nadi", "FJ"),
            ("EZE", "Buenos Aires", "AR"),
            ("LHR", "London", "GB"),
        ] {
            let airport = lookup(code).unwrap_or_else(|| panic!("{code} missing"));
            assert_eq!((airport.city, airport.country), (city, country), "{code}");
        }
        let anchorage = lookup("ANC").unwrap();
        assert!((anchorage.latitude - 61.17).abs() < 0.05);
        assert!((anchorage.longitude + 150.0).abs() < 0.05);
    }

    #[test]
    fn every_hub_is_in_the_list() {
        for hub in HUBS {
            assert!(lookup(hub).is_some(), "{hub} missing");
        }
    }

    #[test]
    fn malformed_and_duplicate_rows_are_skipped() {
        let parsed = parse(
            "# comment\ncode\tname\tcity\tcountry\tlatitude\tlongitude\n\
             AAA\tA\tA\tPF\t1\t2\n\
             aaa\tA\tA\tPF\t1\t2\n\
             BBB\tB\t\tUS\t1\t2\n\
             CCC\tC\tC\tUS\t91\t2\n\
             DDD\tD\tD\tUS\t1\tx\n\
             EEE\tE\tE\tUS\t1\t2\t\n\
             AAA\tA2\tA2\tPF\t1\t2\n",
        );
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].name, "A");
    }
}
