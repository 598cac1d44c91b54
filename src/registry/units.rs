//! Sizes and names as the ldm CLI writes them.

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
pub const TIB: u64 = 1 << 40;

/// Parses `4G`, `512M`, `1024k`, `1T` or a plain byte count (the CLI's default unit).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let invalid = || {
        format!(
            "Invalid memory size '{text}': expected a number with an optional unit K, M, G or T"
        )
    };
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    if digits.is_empty() {
        return Err(invalid());
    }
    let unit = unit.strip_suffix(['b', 'B']).unwrap_or(unit);
    let scale = match unit {
        "" => 1,
        "k" | "K" => KIB,
        "m" | "M" => MIB,
        "g" | "G" => GIB,
        "t" | "T" => TIB,
        _ => return Err(invalid()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(invalid)
}

/// The largest unit that states `bytes` exactly: `4G`, `1536M`, `12K`, `100`.
pub fn format_size(bytes: u64) -> String {
    for (scale, unit) in [(TIB, "T"), (GIB, "G"), (MIB, "M"), (KIB, "K")] {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes.checked_div(scale).unwrap_or_default());
        }
    }
    bytes.to_string()
}

/// Rounds `bytes` up to a multiple of `align` (not 0); `None` when that passes `u64::MAX`
/// (a size within `align` of 2^64 used to wrap to 0).
pub fn round_up(bytes: u64, align: u64) -> Option<u64> {
    bytes.checked_next_multiple_of(align)
}

/// Rounds `bytes` down to a multiple of `align` (0 for an `align` of 0).
pub fn round_down(bytes: u64, align: u64) -> u64 {
    bytes
        .checked_rem(align)
        .map_or(0, |rest| bytes.saturating_sub(rest))
}

/// Longest name of a domain, service, volume, disk, network or variable (§3).
pub const NAME_CHARS_MAX: usize = 256;
/// Longest SP configuration name (§3).
pub const SPCONFIG_CHARS_MAX: usize = 69;

/// Checks a name against §3: at most `max` characters, the first a letter or digit, the rest
/// letters, digits and `- _ + # . : ; ~ ( )`. `what` names the object in the message.
pub fn check_name(what: &str, name: &str, max: usize) -> Result<(), String> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err(format!("The {what} name must not be empty"));
    };
    if name.chars().count() > max {
        return Err(format!(
            "Invalid {what} name '{}...': at most {max} characters are allowed",
            name.chars().take(32).collect::<String>()
        ));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "Invalid {what} name '{name}': it must begin with a letter or a digit"
        ));
    }
    if let Some(bad) = chars.find(|c| !c.is_ascii_alphanumeric() && !"-_+#.:;~()".contains(*c)) {
        return Err(format!(
            "Invalid {what} name '{name}': the character '{bad}' is not allowed"
        ));
    }
    Ok(())
}

/// Parses a MAC address `00:14:4f:f8:00:01` (one or two hex digits per byte) into 48 bits.
pub fn parse_mac(text: &str) -> Result<u64, String> {
    let invalid = || format!("Invalid MAC address '{text}'");
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return Err(invalid());
    }
    parts.iter().try_fold(0u64, |mac, part| {
        if part.is_empty() || part.len() > 2 {
            return Err(invalid());
        }
        let byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        Ok(mac << 8 | u64::from(byte))
    })
}

pub fn format_mac(mac: u64) -> String {
    let b = mac.to_be_bytes();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[2], b[3], b[4], b[5], b[6], b[7]
    )
}

/// Parses a whole number property, naming it in the error.
pub fn parse_number<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("Invalid {what} '{text}': expected a whole number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_the_cli_units() {
        assert_eq!(parse_size("4G"), Ok(4 * GIB));
        assert_eq!(parse_size("512m"), Ok(512 * MIB));
        assert_eq!(parse_size("1024K"), Ok(MIB));
        assert_eq!(parse_size("2GB"), Ok(2 * GIB));
        assert_eq!(parse_size("1T"), Ok(TIB));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "G", "4X", "-1G", "1.5G", "99999999999999999999T", "4 G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rounding_never_wraps() {
        // A size within 4 MiB of 2^64 used to round up to 0.
        assert_eq!(round_up(u64::MAX - MIB, 4 * MIB), None);
        assert_eq!(round_up(u64::MAX, 1), Some(u64::MAX));
        assert_eq!(round_up(5 * MIB, 4 * MIB), Some(8 * MIB));
        assert_eq!(round_up(0, 4 * MIB), Some(0));
        assert_eq!(round_down(u64::MAX, 4 * MIB), u64::MAX - (4 * MIB - 1));
        assert_eq!(round_down(7 * MIB, 4 * MIB), 4 * MIB);
        assert_eq!(round_down(7, 0), 0);
    }

    #[test]
    fn sizes_format_in_the_largest_exact_unit() {
        assert_eq!(format_size(4 * GIB), "4G");
        assert_eq!(format_size(1536 * MIB), "1536M");
        assert_eq!(format_size(12 * KIB), "12K");
        assert_eq!(format_size(100), "100");
        assert_eq!(format_size(0), "0");
    }

    #[test]
    fn names_follow_the_rules_of_section_3() {
        assert!(check_name("domain", "ldg1", NAME_CHARS_MAX).is_ok());
        assert!(check_name("domain", "a-b_c+d#e.f:g;h~i(j)", NAME_CHARS_MAX).is_ok());
        assert!(check_name("domain", "9lives", NAME_CHARS_MAX).is_ok());
        assert!(check_name("domain", "", NAME_CHARS_MAX).is_err());
        assert!(check_name("domain", "-x", NAME_CHARS_MAX).is_err());
        assert!(check_name("domain", "a b", NAME_CHARS_MAX).is_err());
        assert!(check_name("domain", "a/b", NAME_CHARS_MAX).is_err());
        assert!(check_name("domain", "é", NAME_CHARS_MAX).is_err());
        assert!(check_name("domain", &"a".repeat(256), NAME_CHARS_MAX).is_ok());
        assert!(check_name("domain", &"a".repeat(257), NAME_CHARS_MAX).is_err());
        assert!(check_name("SP configuration", &"a".repeat(70), SPCONFIG_CHARS_MAX).is_err());
    }

    #[test]
    fn macs_round_trip() {
        let mac = parse_mac("00:14:4f:f8:0:1").unwrap();
        assert_eq!(mac, 0x0014_4ff8_0001);
        assert_eq!(format_mac(mac), "00:14:4f:f8:00:01");
        assert!(parse_mac("00:14:4f:f8:00").is_err());
        assert!(parse_mac("00:14:4f:f8:00:100").is_err());
        assert!(parse_mac("zz:14:4f:f8:00:01").is_err());
    }
}
