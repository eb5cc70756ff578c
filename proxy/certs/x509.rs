//! Reading X.509 certificates: parse, validity, subject names and SANs. One ASN.1 stack for the
//! whole product, RustCrypto's `x509-cert`/`der` (the CSR builder must *encode*, which that stack
//! does and a parse-only one cannot).
//!
//! Attribute types are named as OpenSSL and the earlier parser (x509-parser) named them, so
//! `allow: subject` rules written for it keep matching: `CN`, `O`, `OU`, `C`, `L`, `ST`, `DC`,
//! `Email`, the registry short name for other well-known types, else the dotted OID.

use std::fmt::Write as _;
use std::time::SystemTime;

use der::asn1::{AnyRef, ObjectIdentifier};
use der::{Decode as _, Tag, Tagged as _};
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;

/// Parses one DER certificate (the whole input: trailing bytes are an error).
pub(crate) fn parse(der: &[u8]) -> Result<Certificate, der::Error> {
    Certificate::from_der(der)
}

/// The end of the certificate's validity period.
pub(crate) fn not_after(cert: &Certificate) -> SystemTime {
    cert.tbs_certificate.validity.not_after.to_system_time()
}

/// Abbreviations for the common attribute types (those OpenSSL prints).
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("1.2.840.113549.1.9.1", "Email"),
];

/// Short names of the other attribute types a subject may hold.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("2.5.4.0", "objectClass"),
    ("2.5.4.1", "aliasedEntryName"),
    ("2.5.4.2", "knowledgeInformation"),
    ("2.5.4.4", "surname"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.9", "streetAddress"),
    ("2.5.4.12", "title"),
    ("2.5.4.13", "description"),
    ("2.5.4.14", "searchGuide"),
    ("2.5.4.15", "businessCategory"),
    ("2.5.4.16", "postalAddress"),
    ("2.5.4.17", "postalCode"),
    ("2.5.4.41", "name"),
    ("2.5.4.42", "givenName"),
    ("2.5.4.43", "initials"),
    ("2.5.4.44", "generationQualifier"),
    ("2.5.4.45", "uniqueIdentifier"),
    ("2.5.4.46", "dnQualifier"),
    ("0.9.2342.19200300.100.1.1", "uid"),
    ("1.2.840.113549.1.9.2", "unstructuredName"),
    ("1.3.6.1.4.1.311.60.2.1.1", "msJurisdictionLocality"),
    ("1.3.6.1.4.1.311.60.2.1.2", "msJurisdictionStateOrProvince"),
    ("1.3.6.1.4.1.311.60.2.1.3", "msJurisdictionCountry"),
];

/// The name of an attribute type: its abbreviation, else its short name, else the dotted OID.
pub(crate) fn attribute_type_name(oid: &ObjectIdentifier) -> String {
    let dotted = oid.to_string();
    ABBREVIATIONS
        .iter()
        .chain(SHORT_NAMES)
        .find(|(id, _)| *id == dotted)
        .map_or(dotted.clone(), |(_, name)| (*name).to_owned())
}

/// An attribute value as text when it is one of the string types names use in practice
/// (UTF8String, PrintableString, IA5String, NumericString); `None` for anything else.
pub(crate) fn attribute_str(value: AnyRef<'_>) -> Option<&str> {
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString => {
            std::str::from_utf8(value.value()).ok()
        }
        _ => None,
    }
}

/// Every attribute of `name`, in certificate order: (type name, text value if a string).
pub(crate) fn attributes(name: &Name) -> impl Iterator<Item = (String, Option<&str>)> {
    name.0.iter().flat_map(|rdn| rdn.0.iter()).map(|atv| {
        let value = attribute_str(AnyRef::from(&atv.value));
        (attribute_type_name(&atv.oid), value)
    })
}

/// `CN=app, O=corp` (certificate order; `+` joins the attributes of a multi-valued RDN), for
/// logs. A value that is not a string shows as `#` and its DER content in hex.
pub(crate) fn display_name(name: &Name) -> String {
    let mut out = String::new();
    for (i, rdn) in name.0.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, atv) in rdn.0.iter().enumerate() {
            if j > 0 {
                out.push_str(" + ");
            }
            out.push_str(&attribute_type_name(&atv.oid));
            out.push('=');
            let value = AnyRef::from(&atv.value);
            match attribute_str(value) {
                Some(text) => out.push_str(text),
                None => {
                    out.push('#');
                    for byte in value.value() {
                        // Writing to a String cannot fail.
                        let _ = write!(out, "{byte:02x}");
                    }
                }
            }
        }
    }
    out
}

/// The DNS and URI names of the certificate's subjectAltName extension (empty when it has
/// none). A malformed or repeated extension is an error.
pub(crate) fn dns_and_uri_sans(
    cert: &Certificate,
) -> Result<(Vec<String>, Vec<String>), der::Error> {
    let mut dns = Vec::new();
    let mut uris = Vec::new();
    if let Some((_, SubjectAltName(names))) = cert.tbs_certificate.get::<SubjectAltName>()? {
        for name in names {
            match name {
                GeneralName::DnsName(d) => dns.push(d.to_string()),
                GeneralName::UniformResourceIdentifier(u) => uris.push(u.to_string()),
                _ => {}
            }
        }
    }
    Ok((dns, uris))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(params: rcgen::CertificateParams) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn names_sans_and_validity_are_read() {
        let mut params = rcgen::CertificateParams::new(vec!["App.Example.".into()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://corp/ns/a/sa/b".try_into().unwrap(),
        ));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "app");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "corp");
        params.distinguished_name.push(
            rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]),
            rcgen::DnValue::PrintableString("42".try_into().unwrap()),
        );
        params.distinguished_name.push(
            rcgen::DnType::CustomDnType(vec![1, 2, 3, 4]),
            rcgen::DnValue::Utf8String("x".into()),
        );
        params.not_after = rcgen::date_time_ymd(2040, 1, 2);
        let der = cert_with(params);
        let cert = parse(&der).unwrap();
        let subject = &cert.tbs_certificate.subject;
        assert_eq!(
            display_name(subject),
            "CN=app, O=corp, serialNumber=42, 1.2.3.4=x"
        );
        let attrs: Vec<_> = attributes(subject).collect();
        assert_eq!(attrs[0], ("CN".to_owned(), Some("app")));
        assert_eq!(attrs[3], ("1.2.3.4".to_owned(), Some("x")));
        let (dns, uris) = dns_and_uri_sans(&cert).unwrap();
        assert_eq!(dns, ["App.Example."]);
        assert_eq!(uris, ["spiffe://corp/ns/a/sa/b"]);
        assert_eq!(
            not_after(&cert),
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(2_209_075_200)
        );
    }

    #[test]
    fn garbage_and_trailing_bytes_are_errors() {
        assert!(parse(b"not der").is_err());
        let mut der = cert_with(rcgen::CertificateParams::new(vec!["a".into()]).unwrap());
        assert!(parse(&der).is_ok());
        der.push(0);
        assert!(parse(&der).is_err());
    }
}
