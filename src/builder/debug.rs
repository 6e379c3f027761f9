//! `Debug` for [`RedlockBuilder`]: every setting, secrets as "set"/"unset".

use std::fmt;

use super::{NodeSpec, RedlockBuilder};

impl fmt::Debug for RedlockBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            nodes,
            retry_count,
            retry_delay,
            retry_jitter,
            drift_factor,
            node_timeout,
            connect_timeout,
            key_prefix,
            fencing,
            fence_suffix,
            shared_counters,
            wake_on_release,
            heal_on_extend,
            metrics_class,
            restart_quarantine,
            health_check,
            min_validity,
            owner_label,
            local_handover,
            clock,
            #[cfg(feature = "tls")]
            tls,
        } = self;
        let nodes: Vec<String> = nodes.iter().map(NodeSpec::shown).collect();
        let mut f = f.debug_struct("RedlockBuilder");
        f.field("nodes", &nodes)
            .field("retry_count", retry_count)
            .field("retry_delay", retry_delay)
            .field("retry_jitter", retry_jitter)
            .field("drift_factor", drift_factor)
            .field("node_timeout", node_timeout)
            .field("connect_timeout", connect_timeout)
            .field("key_prefix", key_prefix)
            .field("fencing", fencing)
            .field("fence_suffix", fence_suffix)
            .field("shared_counters", shared_counters)
            .field("wake_on_release", wake_on_release)
            .field("heal_on_extend", heal_on_extend)
            .field("metrics_class", metrics_class)
            .field("restart_quarantine", restart_quarantine)
            .field("health_check", health_check)
            .field("min_validity", min_validity)
            .field("owner_label", owner_label)
            .field("local_handover", local_handover)
            .field("clock", clock);
        #[cfg(feature = "tls")]
        {
            let set = |o: bool| if o { "set" } else { "unset" };
            f.field("tls_root_ca", &set(tls.root_ca.is_some()))
                .field("tls_client_cert", &set(tls.client.is_some()));
        }
        f.finish()
    }
}
