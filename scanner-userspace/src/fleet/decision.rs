//! Decisions as the Local API streams them to bouncers
//! (`GET /v1/decisions/stream`): `{"new": [...] | null, "deleted": [...] | null}`,
//! each decision `{id, origin, type, scope, value, duration, scenario}` with a
//! Go duration string (`"3h59m56.149s"`, negative once deleted).

use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::kernel::policy::parse_net;

/// One pull of the decision stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Stream {
    /// Decisions made since the last pull (all active ones at startup).
    #[serde(default)]
    pub(crate) new: Option<Vec<Decision>>,
    /// Decisions deleted or expired since the last pull (repeated for a
    /// couple of seconds: applying one twice must be harmless).
    #[serde(default)]
    pub(crate) deleted: Option<Vec<Decision>>,
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Decision {
    pub(crate) id: i64,
    #[serde(default)]
    pub(crate) origin: String,
    /// `ban`, `captcha`, ...: only `ban` is enforced.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// `Ip` or `Range` (the stream sends no other scope by default).
    pub(crate) scope: String,
    pub(crate) value: String,
    /// Time left, as Go prints a duration.
    pub(crate) duration: String,
    #[serde(default)]
    pub(crate) scenario: String,
}

/// What a decision asks of this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A ban of this address or range for this long.
    Ban(IpNet, Duration),
    /// A ban that has already run out (or a malformed duration).
    Expired(IpNet),
    /// Not a ban of an Ip or Range: counted, never enforced.
    Other,
}

impl Decision {
    /// The address or range it covers, for the scopes bouncers enforce.
    pub(crate) fn net(&self) -> Option<IpNet> {
        match self.scope.to_ascii_lowercase().as_str() {
            "ip" | "range" => parse_net(self.value.trim()).ok(),
            _ => None,
        }
    }

    pub(crate) fn target(&self) -> Target {
        let Some(net) = self.net() else {
            return Target::Other;
        };
        if !self.kind.eq_ignore_ascii_case("ban") {
            return Target::Other;
        }
        match go_duration(&self.duration) {
            Some(left) if !left.is_zero() => Target::Ban(net, left),
            _ => Target::Expired(net),
        }
    }
}

/// Parses a duration as Go's `time.Duration.String()` prints it
/// (`"1h2m3.5s"`, `"250ms"`, `"1.5µs"`, `"0s"`); a negative one is zero.
/// None when it is not one.
pub(crate) fn go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    if negative {
        return Some(Duration::ZERO);
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_prints_them() {
        let d = |s| go_duration(s).map(|d| d.as_millis());
        assert_eq!(d("59m56.149426736s"), Some(3_596_149));
        assert_eq!(d("3h59m56.14942277s"), Some(14_396_149));
        assert_eq!(d("1h"), Some(3_600_000));
        assert_eq!(d("250ms"), Some(250));
        assert_eq!(go_duration("1.5µs"), Some(Duration::from_nanos(1_500)));
        assert_eq!(go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(go_duration("-308.846865ms"), Some(Duration::ZERO));
        for bad in ["", "1 hour", "h", "5x", "-"] {
            assert_eq!(go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_stream_parses_as_the_local_api_sends_it() {
        // As crowdsec 1.4.6 answers (null for nothing, never []).
        let body = r#"{"deleted":[{"duration":"-308.846865ms","id":1,"origin":"cscli","scenario":"manual 'ban' from 'cscli-local'","scope":"Ip","type":"ban","value":"198.18.0.9"}],"new":[{"duration":"29m59.300245118s","id":6,"origin":"cscli","scenario":"x","scope":"Range","type":"ban","value":"2001:db8:1::/64"},{"duration":"1h","id":7,"origin":"cscli","scenario":"x","scope":"Ip","type":"captcha","value":"198.18.0.10"},{"duration":"1h","id":8,"origin":"cscli","scenario":"x","scope":"Country","type":"ban","value":"FR"}]}"#;
        let s: Stream = serde_json::from_str(body).unwrap();
        let new = s.new.unwrap();
        let Target::Ban(net, left) = new[0].target() else {
            panic!("{:?}", new[0]);
        };
        assert_eq!(net, "2001:db8:1::/64".parse::<IpNet>().unwrap());
        assert_eq!(left.as_millis(), 1_799_300);
        assert_eq!(new[1].target(), Target::Other, "captcha is not enforced");
        assert_eq!(new[2].target(), Target::Other, "nor a country");
        let deleted = s.deleted.unwrap();
        assert_eq!(
            deleted[0].target(),
            Target::Expired("198.18.0.9/32".parse().unwrap())
        );
        let empty: Stream = serde_json::from_str(r#"{"deleted":null,"new":null}"#).unwrap();
        assert_eq!(empty, Stream::default());
    }
}
