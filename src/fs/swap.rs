//! Swap areas: not a filesystem, but made the same way, with mkswap and
//! the captured UUID and label (there are no parameters to keep).

use super::argv;

/// mkswap for a swap area with `uuid` and `label` on `device`.
pub fn commands(uuid: &str, label: Option<&str>, device: &str) -> Vec<Vec<String>> {
    let mut a = argv(&["mkswap", "-U", uuid]);
    if let Some(l) = label {
        a.extend(argv(&["-L", l]));
    }
    a.push(device.into());
    vec![a]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_command() {
        assert_eq!(
            commands(
                "deadbeef-0000-4000-8000-000000000001",
                Some("swap"),
                "/dev/sdb4"
            )[0]
            .join(" "),
            "mkswap -U deadbeef-0000-4000-8000-000000000001 -L swap /dev/sdb4"
        );
    }
}
