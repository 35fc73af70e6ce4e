//! Pure: what host maintenance may remove. An image goes only when it is dangling (no tag), no
//! container uses it (any host's, or none's: the engine's own count), and no workspace's spec on
//! this host names it (by id, short id, digest or tag); a volume goes only when it is anonymous
//! and no container mounts it. When the engine does not say who uses a thing, it is kept.

use crate::runtime::{ImageInfo, VolumeInfo};

/// Whether the image reference `named` (a spec's `image`) names `image`.
pub fn names(named: &str, image: &ImageInfo) -> bool {
    let named = named.trim();
    if named.is_empty() {
        return false;
    }
    let hex = image.id.strip_prefix("sha256:").unwrap_or(&image.id);
    let bare = named.strip_prefix("sha256:").unwrap_or(named);
    let short_id =
        bare.len() >= 12 && bare.bytes().all(|b| b.is_ascii_hexdigit()) && hex.starts_with(bare);
    let tagged =
        |tag: &String| tag == named || (!named.contains(':') && *tag == format!("{named}:latest"));
    // By digest: `repo@sha256:…`, with or without a registry or a tag before the `@`, names
    // the image whose content has that digest, however the engine spells the repository.
    let digest = |reference: &str| {
        reference
            .rsplit_once('@')
            .map(|(_, digest)| digest.to_string())
    };
    let by_digest = digest(named).is_some_and(|wanted| {
        image
            .digests
            .iter()
            .any(|d| digest(d).as_deref() == Some(wanted.as_str()))
    });
    image.id == named || short_id || by_digest || image.tags.iter().any(tagged)
}

/// Whether a volume's name is one the engine made up: 64 hexadecimal digits, the name of an
/// anonymous volume (a `VOLUME` of an image, a `-v /path` without a name, `docker volume
/// create` without one). A named volume was named by someone who means to use it again.
pub fn is_anonymous(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The images to remove, of `images`, given the images the host's workspaces' specs name.
pub fn images<'a>(images: &'a [ImageInfo], named: &[String]) -> Vec<&'a ImageInfo> {
    images
        .iter()
        .filter(|image| image.tags.is_empty())
        .filter(|image| image.containers == Some(0))
        .filter(|image| !named.iter().any(|n| names(n, image)))
        .collect()
}

/// The volumes to remove, of `volumes`: anonymous ones that no container mounts. A named
/// volume is kept though unused (a compose project's database while the project is down), as
/// Docker's own `volume prune` does since 23.0.
pub fn volumes(volumes: &[VolumeInfo]) -> Vec<&VolumeInfo> {
    volumes
        .iter()
        .filter(|volume| volume.containers == Some(0) && is_anonymous(&volume.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, tags: &[&str], containers: Option<u64>) -> ImageInfo {
        ImageInfo {
            id: format!("sha256:{id}"),
            tags: tags.iter().map(ToString::to_string).collect(),
            digests: vec![format!("repo@sha256:{id}")],
            bytes: 100,
            containers,
        }
    }

    #[test]
    fn only_dangling_unused_unnamed_images_go() {
        let long = "0123456789abcdef0123";
        let cases: &[(&str, ImageInfo, &[&str], bool)] = &[
            ("dangling, unused", image("aa11", &[], Some(0)), &[], true),
            (
                "tagged",
                image("aa11", &["dev:latest"], Some(0)),
                &[],
                false,
            ),
            (
                "a container uses it",
                image("aa11", &[], Some(1)),
                &[],
                false,
            ),
            (
                "the engine did not say",
                image("aa11", &[], None),
                &[],
                false,
            ),
            (
                "a spec names it by id",
                image("aa11", &[], Some(0)),
                &["sha256:aa11"],
                false,
            ),
            (
                "a spec names it by short id",
                image(long, &[], Some(0)),
                &["0123456789ab"],
                false,
            ),
            (
                "too short an id is no name",
                image(long, &[], Some(0)),
                &["0123"],
                true,
            ),
            (
                "a spec names it by digest",
                image("aa11", &[], Some(0)),
                &["repo@sha256:aa11"],
                false,
            ),
            (
                "a spec names it by digest through a registry and a tag",
                image("aa11", &[], Some(0)),
                &["docker.io/library/repo:1.2@sha256:aa11"],
                false,
            ),
            (
                "a spec names another digest",
                image("aa11", &[], Some(0)),
                &["repo@sha256:bb22"],
                true,
            ),
            (
                "a spec names another image",
                image("aa11", &[], Some(0)),
                &["dev:latest", "sha256:bb22"],
                true,
            ),
        ];
        for (name, candidate, named, removed) in cases {
            let named: Vec<String> = named.iter().map(ToString::to_string).collect();
            let list = [candidate.clone()];
            assert_eq!(images(&list, &named).len() == 1, *removed, "{name}");
        }
    }

    #[test]
    fn a_tag_without_one_means_latest() {
        let tagged = image("aa11", &["dev:latest"], Some(0));
        assert!(names("dev", &tagged));
        assert!(names("dev:latest", &tagged));
        assert!(!names("dev:1", &tagged));
        assert!(!names("", &tagged));
    }

    #[test]
    fn only_anonymous_volumes_no_container_mounts_go() {
        let volume = |name: &str, containers| VolumeInfo {
            name: name.into(),
            bytes: 1,
            containers,
        };
        let anonymous = |digit: &str| digit.repeat(64);
        let list = [
            volume(&anonymous("a"), Some(0)),
            volume(&anonymous("b"), Some(2)),
            volume(&anonymous("c"), None),
            volume("compose_db", Some(0)),
            volume(&"d".repeat(63), Some(0)),
            volume(&"g".repeat(64), Some(0)),
        ];
        let names: Vec<&str> = volumes(&list).iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, [anonymous("a")]);
    }
}
