//! Enumerations whose values are names on the wire: event names, scan
//! kinds, actions, reasons, origins. Each variant's name is written once,
//! and serde, `as_str` (the journal, metrics labels, text lines) and `ALL`
//! (docs and tests) all read it from there, so they cannot drift apart.
//!
//! Per-variant `rename` rather than `rename_all`: some names are not in
//! one case (`sctp-init` next to `dry_run`), and the literal is the name.

/// Declares an enum whose variants serialise as the given names, with
/// `as_str`, `ALL` and `Display`.
macro_rules! named {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every value, in the order they are documented.
            #[allow(dead_code, reason = "not every list is walked outside tests")]
            $vis const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The name, as events and replies carry it.
            $vis const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl $crate::named::Named for $name {
            const ALL: &'static [Self] = $name::ALL;

            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use named;

/// What every [`named!`] enum is, for code over any of them (the CLI's
/// value parsers).
pub(crate) trait Named: Copy + Send + Sync + 'static {
    /// Every value, in the order they are documented.
    const ALL: &'static [Self];

    /// The name, as events, replies and the command line spell it.
    fn as_str(self) -> &'static str;

    /// The value with this name.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    named! {
        /// A test enum.
        enum Sample {
            One = "one",
            TwoWords = "two-words",
        }
    }

    #[test]
    fn serde_as_str_and_all_agree() {
        for v in Sample::ALL {
            let json = serde_json::to_string(v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.as_str()));
            assert_eq!(serde_json::from_str::<Sample>(&json).unwrap(), *v);
            assert_eq!(v.to_string(), v.as_str());
        }
        assert_eq!(Sample::TwoWords.as_str(), "two-words");
        assert!(serde_json::from_str::<Sample>("\"three\"").is_err());
        use super::Named as _;
        assert_eq!(Sample::from_name("two-words"), Some(Sample::TwoWords));
        assert_eq!(Sample::from_name("three"), None);
    }
}
