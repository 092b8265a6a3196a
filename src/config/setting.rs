//! How a setting is declared once: the [`settings!`] macro makes, from one
//! declaration per setting (its doc, its file key, type and default, and
//! its flag and environment variable), the section's struct as the file
//! is read into it, its [`Default`], its flags in `pushd serve --help` and
//! how what they give overrides the file ([`Section`]).
//!
//! Flags are made with clap's builder, not its derive, so that each flag's
//! id is the setting's file key (`engine.max_attempts`) and its help ends
//! with the default the declaration holds.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command, ValueEnum, value_parser};

use super::IdentityVerification;

/// A section of the file (or the file's top level): its flags, and how
/// what they give overrides it.
pub trait Section: Default {
    /// Adds this section's flags to `command`, each with the id
    /// `<prefix><key>` (`prefix` is `engine.` for `[engine]`).
    fn flags(command: Command, prefix: &str) -> Command;
    /// Sets each setting a flag or a variable gave (looked up by the ids
    /// [`Section::flags`] gave them).
    fn take_given(&mut self, given: &ArgMatches, prefix: &str);
}

/// A setting's type: how its flag's value parses, what a flag or variable
/// gave, and how its default reads in `--help`.
pub trait Setting: Sized {
    /// `arg` taking a value of this type.
    fn parsed(arg: Arg) -> Arg;
    /// The value a flag or a variable gave the arg `id`, if any (none
    /// from matches without it, as an `Overrides::default()`'s).
    fn given(matches: &ArgMatches, id: &str) -> Option<Self>;
    /// The value as `--help` shows a default; `None` for no value.
    fn shown(&self) -> Option<String>;
}

/// Scalars: one value, parsed by clap's parser for the type.
macro_rules! scalar_setting {
    ($($ty:ty => |$value:ident| $shown:expr),* $(,)?) => {
        $(
            impl Setting for $ty {
                fn parsed(arg: Arg) -> Arg {
                    arg.action(ArgAction::Set).value_parser(value_parser!($ty))
                }

                fn given(matches: &ArgMatches, id: &str) -> Option<Self> {
                    matches.try_get_one::<$ty>(id).ok().flatten().cloned()
                }

                fn shown(&self) -> Option<String> {
                    let $value = self;
                    Some($shown)
                }
            }
        )*
    };
}

scalar_setting! {
    u16 => |n| n.to_string(),
    u32 => |n| n.to_string(),
    u64 => |n| n.to_string(),
    usize => |n| n.to_string(),
    f64 => |n| n.to_string(),
    bool => |b| b.to_string(),
    String => |s| s.clone(),
    PathBuf => |path| path.display().to_string(),
    IdentityVerification => |choice| choice
        .to_possible_value()
        .map_or_else(String::new, |value| value.get_name().to_owned()),
}

/// An optional setting: unset by default; a flag or variable sets it.
impl<T: Setting> Setting for Option<T> {
    fn parsed(arg: Arg) -> Arg {
        T::parsed(arg)
    }

    fn given(matches: &ArgMatches, id: &str) -> Option<Self> {
        T::given(matches, id).map(Some)
    }

    fn shown(&self) -> Option<String> {
        self.as_ref().and_then(T::shown)
    }
}

/// A list: comma-separated in a variable or a flag, which may repeat;
/// empty items are dropped.
impl Setting for Vec<String> {
    fn parsed(arg: Arg) -> Arg {
        arg.action(ArgAction::Append)
            .value_delimiter(',')
            .value_parser(value_parser!(String))
    }

    fn given(matches: &ArgMatches, id: &str) -> Option<Self> {
        let items = matches.try_get_many::<String>(id).ok().flatten()?;
        Some(items.filter(|item| !item.is_empty()).cloned().collect())
    }

    fn shown(&self) -> Option<String> {
        (!self.is_empty()).then(|| self.join(","))
    }
}

/// The flag of a setting: its long name and variable, the value its type
/// parses, and its help: the doc's lines as one sentence (without its
/// closing period, as clap shows a doc comment), then its default.
pub fn flag<T: Setting>(
    id: String,
    long: &'static str,
    variable: &'static str,
    doc: &[&str],
    default: Option<String>,
) -> Arg {
    let doc = doc
        .iter()
        .map(|line| line.trim())
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let doc = doc.strip_suffix('.').unwrap_or(&doc);
    let help = match default {
        Some(default) => format!("{doc} [default: {default}]"),
        None => doc.to_owned(),
    };
    T::parsed(Arg::new(id))
        .long(long)
        .env(variable)
        .value_name(long.to_uppercase().replace('-', "_"))
        .help(help)
}

/// Declares sections of settings: each field's doc, `#[setting(...)]`,
/// type and default (`= value`; without one, `Default::default()`: `None`,
/// empty) are written once, and the macro makes the struct (reading the
/// file with `#[serde(default, deny_unknown_fields)]`), its [`Default`] and
/// its [`Section`]. Each field's `#[setting(...)]` says where else it is
/// set:
///
/// - `flag = "...", env = "PUSHD_..."`: a flag and its variable, with
///   `shown = ...` for the default `--help` says where the declared one is
///   unset (`None`) and pushd picks the value, and clap's `hide = true`,
///   `hide_env_values = true`;
/// - `env_only = "PUSHD_..."`: a variable only, for a secret that a flag
///   would show in `ps` (with `#[serde(skip)]`: never in the file);
/// - `file_only`: the file only;
/// - `section`: a section, in the file as `[name]`, its flags added.
macro_rules! settings {
    ($(
        $(#[$attr:meta])*
        pub struct $section:ident {
            $(
                $(#[doc = $doc:literal])*
                $(#[serde($($serde:tt)*)])?
                #[setting($($how:tt)*)]
                pub $name:ident: $ty:ty $(= $default:expr)?,
            )*
        }
    )*) => {$(
        $(#[$attr])*
        #[serde(default, deny_unknown_fields)]
        pub struct $section {
            $(
                $(#[doc = $doc])*
                $(#[serde($($serde)*)])?
                pub $name: $ty,
            )*
        }

        impl Default for $section {
            fn default() -> Self {
                $section {
                    $($name: $crate::config::setting::settings!(@default $($default)?),)*
                }
            }
        }

        impl $crate::config::setting::Section for $section {
            fn flags(command: clap::Command, prefix: &str) -> clap::Command {
                let _defaults = Self::default();
                $(
                    let command = $crate::config::setting::settings!(
                        @flag command, prefix, $name, $ty, _defaults.$name, [$($doc),*], $($how)*
                    );
                )*
                command
            }

            fn take_given(&mut self, given: &clap::ArgMatches, prefix: &str) {
                $(
                    $crate::config::setting::settings!(
                        @take self.$name, given, prefix, $name, $ty, $($how)*
                    );
                )*
            }
        }
    )*};

    (@default) => { Default::default() };
    (@default $default:expr) => { $default };

    (@shown $default:expr) => { $crate::config::setting::Setting::shown(&$default) };
    (@shown $default:expr, $shown:expr) => { Some(String::from($shown)) };

    (@flag $command:ident, $prefix:ident, $name:ident, $ty:ty, $default:expr, [$($doc:literal),*],
        flag = $long:literal, env = $env:literal
        $(, shown = $shown:expr)? $(, hide = $hide:literal)? $(, hide_env_values = $hev:literal)?
    ) => {{
        let default = $crate::config::setting::settings!(@shown $default $(, $shown)?);
        let id = format!("{}{}", $prefix, stringify!($name));
        let arg = $crate::config::setting::flag::<$ty>(id, $long, $env, &[$($doc),*], default);
        $command.arg(arg $(.hide($hide))? $(.hide_env_values($hev))?)
    }};
    (@flag $command:ident, $prefix:ident, $name:ident, $ty:ty, $default:expr, [$($doc:literal),*],
        env_only = $env:literal) => { $command };
    (@flag $command:ident, $prefix:ident, $name:ident, $ty:ty, $default:expr, [$($doc:literal),*],
        file_only) => { $command };
    (@flag $command:ident, $prefix:ident, $name:ident, $ty:ty, $default:expr, [$($doc:literal),*],
        section) => {
        <$ty as $crate::config::setting::Section>::flags(
            $command,
            &format!("{}{}.", $prefix, stringify!($name)),
        )
    };

    (@take $field:expr, $given:ident, $prefix:ident, $name:ident, $ty:ty, flag = $($rest:tt)*) => {
        let id = format!("{}{}", $prefix, stringify!($name));
        if let Some(value) = <$ty as $crate::config::setting::Setting>::given($given, &id) {
            $field = value;
        }
    };
    (@take $field:expr, $given:ident, $prefix:ident, $name:ident, $ty:ty, env_only = $env:literal) => {
        if let Ok(value) = std::env::var($env) {
            $field = Some(value);
        }
    };
    (@take $field:expr, $given:ident, $prefix:ident, $name:ident, $ty:ty, file_only) => {};
    (@take $field:expr, $given:ident, $prefix:ident, $name:ident, $ty:ty, section) => {
        $crate::config::setting::Section::take_given(
            &mut $field,
            $given,
            &format!("{}{}.", $prefix, stringify!($name)),
        );
    };
}

pub(crate) use settings;
