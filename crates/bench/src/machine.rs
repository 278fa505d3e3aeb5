//! What the benchmark ran on.

use std::fmt;
use std::fs;
use std::path::Path;

use serde::Serialize;

/// The machine and file systems a benchmark ran on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// Cores this process may use.
    pub cores: usize,
    /// The CPU's model name from `/proc/cpuinfo` ("unknown" if absent).
    pub cpu_model: String,
    /// Whether the CPU has AES-NI (flag `aes`): hardware AES-GCM.
    pub aes_ni: bool,
    /// Whether it has vector AES (flag `vaes`).
    pub vaes: bool,
    /// Whether it has AVX-512 Foundation (flag `avx512f`).
    pub avx512f: bool,
    /// File-system type of the workload folder (`ext4`, `tmpfs`...).
    pub workload_filesystem: String,
    /// File-system type of the scratch folder, where outputs are written.
    pub scratch_filesystem: String,
    /// The kernel release (`uname -r`).
    pub kernel: String,
}

impl Machine {
    /// Describes this machine, with the file systems of `workload` and
    /// `scratch`. Anything that cannot be read is reported as "unknown".
    pub fn detect(workload: &Path, scratch: &Path) -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
        let (cpu_model, flags) = parse_cpuinfo(&cpuinfo);
        let has = |flag: &str| flags.iter().any(|f| f == flag);
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            aes_ni: has("aes"),
            vaes: has("vaes"),
            avx512f: has("avx512f"),
            workload_filesystem: filesystem_of(workload, &mounts),
            scratch_filesystem: filesystem_of(scratch, &mounts),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned()),
        }
    }
}

impl fmt::Display for Machine {
    /// One line: `2 cores, Intel(R) Xeon(R), AES-NI yes, VAES no,
    /// AVX-512F no, workload on ext4, outputs on tmpfs, Linux 6.1.0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "{} cores, {}, AES-NI {}, VAES {}, AVX-512F {}, workload on {}, outputs on {}, Linux {}",
            self.cores,
            self.cpu_model,
            yes_no(self.aes_ni),
            yes_no(self.vaes),
            yes_no(self.avx512f),
            self.workload_filesystem,
            self.scratch_filesystem,
            self.kernel
        )
    }
}

/// The first model name and flag list in `/proc/cpuinfo` text.
fn parse_cpuinfo(text: &str) -> (String, Vec<String>) {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    };
    let model = field("model name").unwrap_or_else(|| "unknown".to_owned());
    let flags = field("flags")
        .map(|f| f.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    (model, flags)
}

/// The type of the file system that holds `path`: the entry of
/// `/proc/mounts` (given as `mounts`) with the longest mount point that
/// contains the path.
fn filesystem_of(path: &Path, mounts: &str) -> String {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _device = fields.next()?;
            let mount_point = unescape_mount(fields.next()?);
            let kind = fields.next()?;
            path.starts_with(&mount_point)
                .then(|| (mount_point.len(), kind.to_owned()))
        })
        // The last of equally long mount points is the one on top.
        .fold(
            None,
            |best: Option<(usize, String)>, (len, kind)| match best {
                Some((best_len, _)) if best_len > len => best,
                _ => Some((len, kind)),
            },
        )
        .map_or_else(|| "unknown".to_owned(), |(_, kind)| kind)
}

/// `/proc/mounts` writes space, tab, newline and backslash as `\040`,
/// `\011`, `\012` and `\134`.
fn unescape_mount(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let text = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
tmpfs /dev/shm tmpfs rw 0 0
/dev/vdb /data xfs rw 0 0
/dev/vdc /data/my\\040disk btrfs rw 0 0
";

    #[test]
    fn picks_the_longest_mount_point() {
        assert_eq!(filesystem_of(Path::new("/dev/shm/x"), MOUNTS), "tmpfs");
        assert_eq!(filesystem_of(Path::new("/data/a/b"), MOUNTS), "xfs");
        assert_eq!(filesystem_of(Path::new("/data/my disk/f"), MOUNTS), "btrfs");
        assert_eq!(filesystem_of(Path::new("/datafile"), MOUNTS), "ext4");
        assert_eq!(filesystem_of(Path::new("/x"), ""), "unknown");
    }

    #[test]
    fn reads_model_and_flags() {
        let text = "processor\t: 0\nmodel name\t: Test CPU @ 2GHz\nflags\t\t: fpu sse2 aes avx2\n";
        let (model, flags) = parse_cpuinfo(text);
        assert_eq!(model, "Test CPU @ 2GHz");
        assert!(flags.iter().any(|f| f == "aes"));
        assert_eq!(parse_cpuinfo("").0, "unknown");
    }

    #[test]
    fn detects_this_machine() {
        let machine = Machine::detect(Path::new("/"), Path::new("/"));
        assert!(machine.cores >= 1);
        assert_ne!(machine.kernel, "");
        assert!(machine.to_string().contains("cores"));
    }
}
