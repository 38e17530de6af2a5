from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConstraintSet(_message.Message):
    __slots__ = ("sct_not_after_sec", "sct_all_after_sec", "min_version", "max_version_exclusive", "permitted_dns_names", "index_not_after", "index_after", "validity_starts_not_after_sec", "validity_starts_after_sec")
    SCT_NOT_AFTER_SEC_FIELD_NUMBER: _ClassVar[int]
    SCT_ALL_AFTER_SEC_FIELD_NUMBER: _ClassVar[int]
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_VERSION_EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    PERMITTED_DNS_NAMES_FIELD_NUMBER: _ClassVar[int]
    INDEX_NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    INDEX_AFTER_FIELD_NUMBER: _ClassVar[int]
    VALIDITY_STARTS_NOT_AFTER_SEC_FIELD_NUMBER: _ClassVar[int]
    VALIDITY_STARTS_AFTER_SEC_FIELD_NUMBER: _ClassVar[int]
    sct_not_after_sec: int
    sct_all_after_sec: int
    min_version: str
    max_version_exclusive: str
    permitted_dns_names: _containers.RepeatedScalarFieldContainer[str]
    index_not_after: int
    index_after: int
    validity_starts_not_after_sec: int
    validity_starts_after_sec: int
    def __init__(self, sct_not_after_sec: _Optional[int] = ..., sct_all_after_sec: _Optional[int] = ..., min_version: _Optional[str] = ..., max_version_exclusive: _Optional[str] = ..., permitted_dns_names: _Optional[_Iterable[str]] = ..., index_not_after: _Optional[int] = ..., index_after: _Optional[int] = ..., validity_starts_not_after_sec: _Optional[int] = ..., validity_starts_after_sec: _Optional[int] = ...) -> None: ...

class TrustAnchor(_message.Message):
    __slots__ = ("der", "sha256_hex", "ev_policy_oids", "constraints", "display_name", "eutl", "enforce_anchor_expiry", "enforce_anchor_constraints", "tls_trust_anchor", "trust_anchor_id", "crs_root_id")
    DER_FIELD_NUMBER: _ClassVar[int]
    SHA256_HEX_FIELD_NUMBER: _ClassVar[int]
    EV_POLICY_OIDS_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    EUTL_FIELD_NUMBER: _ClassVar[int]
    ENFORCE_ANCHOR_EXPIRY_FIELD_NUMBER: _ClassVar[int]
    ENFORCE_ANCHOR_CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    TLS_TRUST_ANCHOR_FIELD_NUMBER: _ClassVar[int]
    TRUST_ANCHOR_ID_FIELD_NUMBER: _ClassVar[int]
    CRS_ROOT_ID_FIELD_NUMBER: _ClassVar[int]
    der: bytes
    sha256_hex: str
    ev_policy_oids: _containers.RepeatedScalarFieldContainer[str]
    constraints: _containers.RepeatedCompositeFieldContainer[ConstraintSet]
    display_name: str
    eutl: bool
    enforce_anchor_expiry: bool
    enforce_anchor_constraints: bool
    tls_trust_anchor: bool
    trust_anchor_id: bytes
    crs_root_id: int
    def __init__(self, der: _Optional[bytes] = ..., sha256_hex: _Optional[str] = ..., ev_policy_oids: _Optional[_Iterable[str]] = ..., constraints: _Optional[_Iterable[_Union[ConstraintSet, _Mapping]]] = ..., display_name: _Optional[str] = ..., eutl: _Optional[bool] = ..., enforce_anchor_expiry: _Optional[bool] = ..., enforce_anchor_constraints: _Optional[bool] = ..., tls_trust_anchor: _Optional[bool] = ..., trust_anchor_id: _Optional[bytes] = ..., crs_root_id: _Optional[int] = ...) -> None: ...

class MtcAnchor(_message.Message):
    __slots__ = ("log_id", "constraints", "tls_trust_anchor", "crs_root_id")
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    TLS_TRUST_ANCHOR_FIELD_NUMBER: _ClassVar[int]
    CRS_ROOT_ID_FIELD_NUMBER: _ClassVar[int]
    log_id: bytes
    constraints: _containers.RepeatedCompositeFieldContainer[ConstraintSet]
    tls_trust_anchor: bool
    crs_root_id: int
    def __init__(self, log_id: _Optional[bytes] = ..., constraints: _Optional[_Iterable[_Union[ConstraintSet, _Mapping]]] = ..., tls_trust_anchor: _Optional[bool] = ..., crs_root_id: _Optional[int] = ...) -> None: ...

class RootStore(_message.Message):
    __slots__ = ("trust_anchors", "version_major", "additional_certs", "mtc_anchors")
    TRUST_ANCHORS_FIELD_NUMBER: _ClassVar[int]
    VERSION_MAJOR_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_CERTS_FIELD_NUMBER: _ClassVar[int]
    MTC_ANCHORS_FIELD_NUMBER: _ClassVar[int]
    trust_anchors: _containers.RepeatedCompositeFieldContainer[TrustAnchor]
    version_major: int
    additional_certs: _containers.RepeatedCompositeFieldContainer[TrustAnchor]
    mtc_anchors: _containers.RepeatedCompositeFieldContainer[MtcAnchor]
    def __init__(self, trust_anchors: _Optional[_Iterable[_Union[TrustAnchor, _Mapping]]] = ..., version_major: _Optional[int] = ..., additional_certs: _Optional[_Iterable[_Union[TrustAnchor, _Mapping]]] = ..., mtc_anchors: _Optional[_Iterable[_Union[MtcAnchor, _Mapping]]] = ...) -> None: ...

class TrustAnchorIdRange(_message.Message):
    __slots__ = ("base_id", "min_active_landmark_inclusive", "last_landmark_inclusive")
    BASE_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_ACTIVE_LANDMARK_INCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    LAST_LANDMARK_INCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    base_id: bytes
    min_active_landmark_inclusive: int
    last_landmark_inclusive: int
    def __init__(self, base_id: _Optional[bytes] = ..., min_active_landmark_inclusive: _Optional[int] = ..., last_landmark_inclusive: _Optional[int] = ...) -> None: ...

class MtcSubTree(_message.Message):
    __slots__ = ("start_inclusive", "end_exclusive", "hash")
    START_INCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    END_EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    start_inclusive: int
    end_exclusive: int
    hash: bytes
    def __init__(self, start_inclusive: _Optional[int] = ..., end_exclusive: _Optional[int] = ..., hash: _Optional[bytes] = ...) -> None: ...

class MtcIndexRange(_message.Message):
    __slots__ = ("start_inclusive", "end_exclusive")
    START_INCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    END_EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    start_inclusive: int
    end_exclusive: int
    def __init__(self, start_inclusive: _Optional[int] = ..., end_exclusive: _Optional[int] = ...) -> None: ...

class MtcAnchorData(_message.Message):
    __slots__ = ("log_id", "trusted_landmark_ids_range", "trusted_subtrees", "revoked_indices")
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_LANDMARK_IDS_RANGE_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_SUBTREES_FIELD_NUMBER: _ClassVar[int]
    REVOKED_INDICES_FIELD_NUMBER: _ClassVar[int]
    log_id: bytes
    trusted_landmark_ids_range: TrustAnchorIdRange
    trusted_subtrees: _containers.RepeatedCompositeFieldContainer[MtcSubTree]
    revoked_indices: _containers.RepeatedCompositeFieldContainer[MtcIndexRange]
    def __init__(self, log_id: _Optional[bytes] = ..., trusted_landmark_ids_range: _Optional[_Union[TrustAnchorIdRange, _Mapping]] = ..., trusted_subtrees: _Optional[_Iterable[_Union[MtcSubTree, _Mapping]]] = ..., revoked_indices: _Optional[_Iterable[_Union[MtcIndexRange, _Mapping]]] = ...) -> None: ...

class MtcMetadata(_message.Message):
    __slots__ = ("update_time_seconds", "mtc_anchor_data")
    UPDATE_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MTC_ANCHOR_DATA_FIELD_NUMBER: _ClassVar[int]
    update_time_seconds: int
    mtc_anchor_data: _containers.RepeatedCompositeFieldContainer[MtcAnchorData]
    def __init__(self, update_time_seconds: _Optional[int] = ..., mtc_anchor_data: _Optional[_Iterable[_Union[MtcAnchorData, _Mapping]]] = ...) -> None: ...
