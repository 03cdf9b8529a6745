//! Reference data: real IATA airport codes with their cities, for validation and text search.

/// One airport of the reference list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Airport {
    /// IATA code.
    pub code: &'static str,
    /// Airport name.
    pub name: &'static str,
    /// City served.
    pub city: &'static str,
    /// Country (ISO 3166-1 alpha-2).
    pub country: &'static str,
}

const fn a(
    code: &'static str,
    name: &'static str,
    city: &'static str,
    country: &'static str,
) -> Airport {
    Airport {
        code,
        name,
        city,
        country,
    }
}

/// The airports annals' airline flies to, sorted by code.
pub const AIRPORTS: &[Airport] = &[
    a("AMS", "Schiphol", "Amsterdam", "NL"),
    a("ATH", "Eleftherios Venizelos", "Athens", "GR"),
    a("ATL", "Hartsfield-Jackson", "Atlanta", "US"),
    a("AUS", "Austin-Bergstrom", "Austin", "US"),
    a("BCN", "El Prat", "Barcelona", "ES"),
    a("BER", "Brandenburg", "Berlin", "DE"),
    a("BKK", "Suvarnabhumi", "Bangkok", "TH"),
    a("BOG", "El Dorado", "Bogota", "CO"),
    a("BOS", "Logan", "Boston", "US"),
    a("BRU", "Brussels Airport", "Brussels", "BE"),
    a("CDG", "Charles de Gaulle", "Paris", "FR"),
    a("CPH", "Kastrup", "Copenhagen", "DK"),
    a("CPT", "Cape Town International", "Cape Town", "ZA"),
    a("DEL", "Indira Gandhi", "Delhi", "IN"),
    a("DEN", "Denver International", "Denver", "US"),
    a("DFW", "Dallas/Fort Worth", "Dallas", "US"),
    a("DOH", "Hamad", "Doha", "QA"),
    a("DUB", "Dublin Airport", "Dublin", "IE"),
    a("DXB", "Dubai International", "Dubai", "AE"),
    a("EWR", "Newark Liberty", "Newark", "US"),
    a("EZE", "Ministro Pistarini", "Buenos Aires", "AR"),
    a("FCO", "Fiumicino", "Rome", "IT"),
    a("FRA", "Frankfurt Airport", "Frankfurt", "DE"),
    a("GIG", "Galeao", "Rio de Janeiro", "BR"),
    a("GRU", "Guarulhos", "Sao Paulo", "BR"),
    a("HEL", "Helsinki-Vantaa", "Helsinki", "FI"),
    a("HKG", "Hong Kong International", "Hong Kong", "HK"),
    a("HND", "Haneda", "Tokyo", "JP"),
    a("IAD", "Dulles", "Washington", "US"),
    a("ICN", "Incheon", "Seoul", "KR"),
    a("IST", "Istanbul Airport", "Istanbul", "TR"),
    a("JFK", "John F. Kennedy", "New York", "US"),
    a("JNB", "O. R. Tambo", "Johannesburg", "ZA"),
    a("LAS", "Harry Reid", "Las Vegas", "US"),
    a("LAX", "Los Angeles International", "Los Angeles", "US"),
    a("LGA", "LaGuardia", "New York", "US"),
    a("LGW", "Gatwick", "London", "GB"),
    a("LHR", "Heathrow", "London", "GB"),
    a("LIS", "Humberto Delgado", "Lisbon", "PT"),
    a("MAD", "Barajas", "Madrid", "ES"),
    a("MAN", "Manchester Airport", "Manchester", "GB"),
    a("MEL", "Tullamarine", "Melbourne", "AU"),
    a("MEX", "Benito Juarez", "Mexico City", "MX"),
    a("MIA", "Miami International", "Miami", "US"),
    a("MUC", "Franz Josef Strauss", "Munich", "DE"),
    a("MXP", "Malpensa", "Milan", "IT"),
    a("NRT", "Narita", "Tokyo", "JP"),
    a("ORD", "O'Hare", "Chicago", "US"),
    a("OSL", "Gardermoen", "Oslo", "NO"),
    a("PEK", "Capital", "Beijing", "CN"),
    a("PHX", "Sky Harbor", "Phoenix", "US"),
    a("PRG", "Vaclav Havel", "Prague", "CZ"),
    a("PVG", "Pudong", "Shanghai", "CN"),
    a("SEA", "Seattle-Tacoma", "Seattle", "US"),
    a("SFO", "San Francisco International", "San Francisco", "US"),
    a("SIN", "Changi", "Singapore", "SG"),
    a("SYD", "Kingsford Smith", "Sydney", "AU"),
    a("TLV", "Ben Gurion", "Tel Aviv", "IL"),
    a("VIE", "Vienna International", "Vienna", "AT"),
    a("WAW", "Chopin", "Warsaw", "PL"),
    a("YUL", "Trudeau", "Montreal", "CA"),
    a("YVR", "Vancouver International", "Vancouver", "CA"),
    a("YYZ", "Pearson", "Toronto", "CA"),
    a("ZRH", "Zurich Airport", "Zurich", "CH"),
];

/// The airport with this (upper-case) code.
pub fn lookup(code: &str) -> Option<&'static Airport> {
    AIRPORTS
        .binary_search_by(|airport| airport.code.cmp(code))
        .ok()
        .map(|i| &AIRPORTS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_and_unique_so_lookup_works() {
        assert!(AIRPORTS.windows(2).all(|w| w[0].code < w[1].code));
        for airport in AIRPORTS {
            assert_eq!(lookup(airport.code), Some(airport));
            assert_eq!(airport.code.len(), 3);
        }
        assert_eq!(lookup("XXX"), None);
    }
}
