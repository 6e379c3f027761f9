//! The script texts a model runs: the crate's own, from
//! [`tokio_redlock::script_source`], or a mutant's in place of one.

/// Declares [`Scripts`] with one field per script and [`Scripts::of_crate`] filling each
/// from the crate, so that a script's field and name are written once.
macro_rules! scripts {
    ($($field:ident: $name:literal),* $(,)?) => {
        /// The script texts the model runs; by default the crate's, from
        /// [`tokio_redlock::script_source`]. Each field is named after its script.
        #[derive(Clone, Copy, Debug)]
        pub struct Scripts {
            $(
                #[doc = concat!("`", $name, "`.")]
                pub $field: &'static str,
            )*
        }

        impl Scripts {
            /// The scripts this build of the crate sends.
            pub fn of_crate() -> Self {
                let get = |name| tokio_redlock::script_source::script(name).expect(name);
                Self {
                    $($field: get($name),)*
                }
            }
        }
    };
}

scripts! {
    acquire: "ACQUIRE_ONE",
    release: "RELEASE",
    extend: "EXTEND",
    extend_heal: "EXTEND_HEAL",
    fenced: "FENCED_ACQUIRE",
    permit: "PERMIT_ACQUIRE",
    read_acquire: "READ_ACQUIRE",
    read_extend: "READ_EXTEND",
    read_release: "READ_RELEASE",
    read_wait_clear: "READ_WAIT_CLEAR",
    write_acquire: "WRITE_ACQUIRE",
    write_release: "WRITE_RELEASE",
    intent_clear: "INTENT_CLEAR",
}
