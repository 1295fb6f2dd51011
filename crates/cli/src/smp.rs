//! `-smp [cpus=]n[,maxcpus=][,sockets=][,dies=][,clusters=][,cores=][,threads=]`.
//!
//! Omitted values are computed as QEMU 7.2's `machine_parse_smp_config`
//! does: machine types before 6.2 fill in sockets first, later ones cores
//! first; threads last. Zero means "omitted" (QEMU warns that it is
//! deprecated). Repeated `-smp` options merge key by key.

use crate::builder::{Builder, Inv};
use crate::config::Smp;
use crate::error::CliError;
use crate::schema::{key, Kind, Schema};
use crate::table::Parsed;

pub(crate) const SMP_SCHEMA: Schema = Schema {
    implied: Some("cpus"),
    keys: &[
        key("cpus", Kind::Number),
        key("maxcpus", Kind::Number),
        key("sockets", Kind::Number),
        key("dies", Kind::Number),
        key("clusters", Kind::Number),
        key("cores", Kind::Number),
        key("threads", Kind::Number),
    ],
    warn_flags: true,
    open: false,
};

/// Merged `-smp` values as given.
#[derive(Debug, Default, Clone)]
pub(crate) struct SmpArgs {
    pub cpus: Option<u64>,
    pub maxcpus: Option<u64>,
    pub sockets: Option<u64>,
    pub dies: Option<u64>,
    pub clusters: Option<u64>,
    pub cores: Option<u64>,
    pub threads: Option<u64>,
    pub loc: Option<Inv>,
}

pub(crate) fn handle_smp(b: &mut Builder, inv: &Inv, p: Parsed) -> Result<(), CliError> {
    let o = p.opts();
    let s = &mut b.smp;
    for (name, slot) in [
        ("cpus", &mut s.cpus),
        ("maxcpus", &mut s.maxcpus),
        ("sockets", &mut s.sockets),
        ("dies", &mut s.dies),
        ("clusters", &mut s.clusters),
        ("cores", &mut s.cores),
        ("threads", &mut s.threads),
    ] {
        if let Some(v) = o.num(name) {
            if v > u64::from(u32::MAX) {
                return Err(inv.err(format!("Value '{v}' is too large for parameter '{name}'")));
            }
            *slot = Some(v);
        }
    }
    s.loc = Some(inv.clone());
    Ok(())
}

/// `n / (f0 * f1 * ...)` without overflow (0 if the divisor is 0).
fn div(n: u64, factors: &[u64]) -> u64 {
    let p: u128 = factors.iter().map(|&f| u128::from(f)).product();
    u128::from(n)
        .checked_div(p)
        .map_or(0, |q| u64::try_from(q).unwrap_or(u64::MAX))
}

impl SmpArgs {
    /// Compute the topology for a machine allowing `max_cpus` vCPUs.
    pub(crate) fn resolve(
        &self,
        machine_max: u64,
        prefer_sockets: bool,
        machine_name: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Smp, CliError> {
        let Some(loc) = &self.loc else {
            return Ok(Smp::default());
        };
        let err = |m: String| loc.err(m);
        let given = [
            self.cpus,
            self.maxcpus,
            self.sockets,
            self.dies,
            self.clusters,
            self.cores,
            self.threads,
        ];
        if given.contains(&Some(0)) {
            warnings.push(loc.err(
                "warning: Deprecated CPU topology (considered invalid): CPU topology parameters must be greater than zero",
            ).to_string());
        }
        let g = |v: Option<u64>| v.unwrap_or(0);
        let mut cpus = g(self.cpus);
        let mut maxcpus = g(self.maxcpus);
        let mut sockets = g(self.sockets);
        let mut cores = g(self.cores);
        let mut threads = g(self.threads);
        if g(self.clusters) > 1 {
            return Err(err(
                "clusters not supported by this machine's CPU topology".into()
            ));
        }
        let dies = g(self.dies).max(1);

        if cpus == 0 && maxcpus == 0 {
            sockets = sockets.max(1);
            cores = cores.max(1);
            threads = threads.max(1);
        } else {
            if maxcpus == 0 {
                maxcpus = cpus;
            }
            if prefer_sockets {
                if sockets == 0 {
                    cores = cores.max(1);
                    threads = threads.max(1);
                    sockets = div(maxcpus, &[dies, cores, threads]);
                } else if cores == 0 {
                    threads = threads.max(1);
                    cores = div(maxcpus, &[sockets, dies, threads]);
                }
            } else if cores == 0 {
                sockets = sockets.max(1);
                threads = threads.max(1);
                cores = div(maxcpus, &[sockets, dies, threads]);
            } else if sockets == 0 {
                threads = threads.max(1);
                sockets = div(maxcpus, &[dies, cores, threads]);
            }
            if threads == 0 {
                threads = div(maxcpus, &[sockets, dies, cores]);
            }
        }
        // Factors are at most 2^32 each; u128 keeps the product exact.
        let total =
            u128::from(sockets) * u128::from(dies) * u128::from(cores) * u128::from(threads);
        if maxcpus == 0 {
            maxcpus = u64::try_from(total).unwrap_or(u64::MAX);
        }
        if cpus == 0 {
            cpus = maxcpus;
        }
        let topo =
            format!("sockets ({sockets}) * dies ({dies}) * cores ({cores}) * threads ({threads})");
        if total != u128::from(maxcpus) {
            return Err(err(format!(
                "Invalid CPU topology: product of the hierarchy must match maxcpus: \
                 {topo} != maxcpus ({maxcpus})"
            )));
        }
        if maxcpus < cpus {
            return Err(err(format!(
                "Invalid CPU topology: maxcpus must be equal to or greater than smp: \
                 {topo} == maxcpus ({maxcpus}) < smp_cpus ({cpus})"
            )));
        }
        if maxcpus > machine_max {
            return Err(err(format!(
                "Invalid SMP CPUs {maxcpus}. The max CPUs supported by machine '{machine_name}' is {machine_max}"
            )));
        }
        let n = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(Smp {
            cpus: n(cpus),
            sockets: n(sockets),
            dies: n(dies),
            cores: n(cores),
            threads: n(threads),
            max_cpus: n(maxcpus),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smp(s: &str, prefer_sockets: bool) -> Result<Smp, String> {
        let o = SMP_SCHEMA.parse(s)?;
        let mut b = Builder::new();
        let inv = Inv::new("-smp", Some(s));
        handle_smp(&mut b, &inv, Parsed::Opts(o)).map_err(|e| e.to_string())?;
        let mut w = Vec::new();
        b.smp
            .resolve(288, prefer_sockets, "pc-q35-7.2", &mut w)
            .map_err(|e| e.to_string())
    }

    fn topo(s: Smp) -> [u32; 6] {
        [s.cpus, s.sockets, s.dies, s.cores, s.threads, s.max_cpus]
    }

    #[test]
    fn cores_preferred_since_6_2() {
        assert_eq!(topo(smp("4", false).unwrap()), [4, 1, 1, 4, 1, 4]);
        assert_eq!(topo(smp("8,sockets=2", false).unwrap()), [8, 2, 1, 4, 1, 8]);
        assert_eq!(topo(smp("8,cores=2", false).unwrap()), [8, 4, 1, 2, 1, 8]);
        assert_eq!(
            topo(smp("8,sockets=2,cores=2", false).unwrap()),
            [8, 2, 1, 2, 2, 8]
        );
        assert_eq!(topo(smp("2,maxcpus=8", false).unwrap()), [2, 1, 1, 8, 1, 8]);
        assert_eq!(
            topo(smp("8,sockets=2,dies=2", false).unwrap()),
            [8, 2, 2, 2, 1, 8]
        );
    }

    #[test]
    fn sockets_preferred_before_6_2() {
        assert_eq!(topo(smp("4", true).unwrap()), [4, 4, 1, 1, 1, 4]);
        assert_eq!(topo(smp("8,cores=2", true).unwrap()), [8, 4, 1, 2, 1, 8]);
        assert_eq!(topo(smp("8,sockets=2", true).unwrap()), [8, 2, 1, 4, 1, 8]);
    }

    #[test]
    fn only_topology() {
        assert_eq!(
            topo(smp("sockets=2,cores=2,threads=2", false).unwrap()),
            [8, 2, 1, 2, 2, 8]
        );
        assert_eq!(
            topo(smp("1,sockets=1,cores=1,threads=1", false).unwrap()),
            [1, 1, 1, 1, 1, 1]
        );
    }

    #[test]
    fn zero_is_omitted() {
        assert_eq!(topo(smp("0", false).unwrap()), [1, 1, 1, 1, 1, 1]);
        assert_eq!(topo(smp("4,sockets=0", false).unwrap()), [4, 1, 1, 4, 1, 4]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            smp("4,sockets=3", false).unwrap_err(),
            "-smp 4,sockets=3: Invalid CPU topology: product of the hierarchy must match maxcpus: \
             sockets (3) * dies (1) * cores (1) * threads (1) != maxcpus (4)"
        );
        assert_eq!(
            smp("4,maxcpus=2", false).unwrap_err(),
            "-smp 4,maxcpus=2: Invalid CPU topology: maxcpus must be equal to or greater than smp: \
             sockets (1) * dies (1) * cores (2) * threads (1) == maxcpus (2) < smp_cpus (4)"
        );
        assert_eq!(
            smp("300", false).unwrap_err(),
            "-smp 300: Invalid SMP CPUs 300. The max CPUs supported by machine 'pc-q35-7.2' is 288"
        );
        assert_eq!(
            smp("4,clusters=2", false).unwrap_err(),
            "-smp 4,clusters=2: clusters not supported by this machine's CPU topology"
        );
        assert_eq!(
            smp(
                "sockets=4294967295,cores=4294967295,threads=4294967295",
                false
            )
            .unwrap_err()
            .split(": ")
            .nth(1),
            Some("Invalid CPU topology")
        );
        assert!(smp("4294967296", false).unwrap_err().contains("too large"));
        assert_eq!(
            SMP_SCHEMA.parse("4,bogus=1").unwrap_err(),
            "Invalid parameter 'bogus'"
        );
        assert_eq!(
            SMP_SCHEMA.parse("foo").unwrap_err(),
            "Parameter 'cpus' expects a number"
        );
    }
}
