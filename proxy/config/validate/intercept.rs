//! A listener's `intercept:` block: the CA files, loaded and checked.

use std::sync::Arc;

use crate::certs::cert_files::{self, FileRole};
use crate::certs::intercept_ca::InterceptCa;
use crate::config::model::Intercept;
use crate::config::schema::{RawIntercept, S};

use super::Ctx;

/// The CA of `raw`, or `None` after reporting why not (at the file the problem is in).
pub(super) fn intercept(cx: &mut Ctx<'_>, raw: &S<RawIntercept>) -> Option<Intercept> {
    let i = &raw.value;
    let cert_file = cx.path(&i.ca_cert_file.value);
    let key_file = cx.path(&i.ca_key_file.value);
    let insecure_ok = i
        .allow_insecure_key_permissions
        .as_ref()
        .is_some_and(|a| a.value);
    match InterceptCa::load(&cert_file, &key_file) {
        Ok(_) if !insecure_ok && world_readable_key(cx, &i.ca_key_file, &key_file) => None,
        Ok(ca) => Some(Intercept {
            ca: Arc::new(ca),
            ca_cert_file: cert_file,
        }),
        Err(e) => {
            let at = match e.role() {
                FileRole::Certificate => i.ca_cert_file.referenced,
                FileRole::Key => i.ca_key_file.referenced,
            };
            cx.error(at, e.to_string());
            None
        }
    }
}

/// Whoever holds the CA key can mint a certificate for any name the apps on this host trust: an
/// error at `ca_key_file` when any user may read it.
fn world_readable_key(cx: &mut Ctx<'_>, key: &S<String>, key_file: &std::path::Path) -> bool {
    let Some(mode) = cert_files::world_accessible_mode(key_file) else {
        return false;
    };
    cx.error(
        key.referenced,
        format!(
            "ca_key_file `{}` is readable or writable by any user (mode {mode:04o}); restrict it (chmod 600) or set `allow_insecure_key_permissions: true` in `intercept`",
            key_file.display()
        ),
    );
    true
}
