//! The script texts a model runs: the crate's own, from
//! [`tokio_redlock::script_source`], or a mutant's in place of one.

/// The script texts the model runs; by default the crate's, from
/// [`tokio_redlock::script_source`]. Each field is named after its script.
#[derive(Clone, Copy, Debug)]
pub struct Scripts {
    /// `ACQUIRE_ONE`.
    pub acquire: &'static str,
    /// `RELEASE`.
    pub release: &'static str,
    /// `EXTEND`.
    pub extend: &'static str,
    /// `EXTEND_HEAL`.
    pub extend_heal: &'static str,
    /// `FENCED_ACQUIRE`.
    pub fenced: &'static str,
    /// `PERMIT_ACQUIRE`.
    pub permit: &'static str,
    /// `READ_ACQUIRE`.
    pub read_acquire: &'static str,
    /// `READ_EXTEND`.
    pub read_extend: &'static str,
    /// `READ_RELEASE`.
    pub read_release: &'static str,
    /// `READ_WAIT_CLEAR`.
    pub read_wait_clear: &'static str,
    /// `WRITE_ACQUIRE`.
    pub write_acquire: &'static str,
    /// `WRITE_RELEASE`.
    pub write_release: &'static str,
    /// `INTENT_CLEAR`.
    pub intent_clear: &'static str,
}

impl Scripts {
    /// The scripts this build of the crate sends.
    pub fn of_crate() -> Self {
        let get = |name| tokio_redlock::script_source::script(name).expect(name);
        Self {
            acquire: get("ACQUIRE_ONE"),
            release: get("RELEASE"),
            extend: get("EXTEND"),
            extend_heal: get("EXTEND_HEAL"),
            fenced: get("FENCED_ACQUIRE"),
            permit: get("PERMIT_ACQUIRE"),
            read_acquire: get("READ_ACQUIRE"),
            read_extend: get("READ_EXTEND"),
            read_release: get("READ_RELEASE"),
            read_wait_clear: get("READ_WAIT_CLEAR"),
            write_acquire: get("WRITE_ACQUIRE"),
            write_release: get("WRITE_RELEASE"),
            intent_clear: get("INTENT_CLEAR"),
        }
    }
}
