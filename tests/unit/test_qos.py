"""IO QoS parameters (qos.linbit.com/*): quantities, RD props, publish-context keys."""

import pytest

from csi_linstor.errors import InvalidArgument
from csi_linstor.mapping import qos


@pytest.mark.parametrize("text,value", [
    ("0", 0), ("500", 500), ("1k", 1000), ("40Mi", 40 << 20), ("1.5Gi", 3 << 29),
    ("1e3", 1000), ("+7", 7), ("2.5", 3), (" 10M ", 10_000_000), ("1Ei", 1 << 60),
])
def test_quantities(text, value):
    assert qos.parse_quantity("qos.linbit.com/rbps", text) == value


@pytest.mark.parametrize("text", ["", "-1", "ten", "10mi", "10m", "1.2.3", "1e99", "9Ei",
                                  "0x10", "1 k", "Mi"])
def test_invalid_quantities_name_the_key(text):
    with pytest.raises(InvalidArgument) as err:
        qos.parse_quantity("qos.linbit.com/wbps", text)
    assert "qos.linbit.com/wbps" in err.value.message


def test_parse_keeps_only_set_limits_and_ignores_other_namespaces():
    limits = qos.parse({"qos.linbit.com/rbps": "1Mi", "qos.linbit.com/wbps": "0",
                        "placementCount": "2", "csi.storage.k8s.io/fstype": "xfs"})
    assert limits == (("qos.linbit.com/rbps", "1048576"),)
    assert qos.rd_props(limits) == {"Aux/qos.linbit.com/rbps": "1048576"}


def test_unknown_qos_key_is_refused():
    with pytest.raises(InvalidArgument) as err:
        qos.parse({"qos.linbit.com/rbsp": "1Mi"})
    assert "qos.linbit.com/rbps" in err.value.message  # says which keys exist


def test_publish_context_has_linbit_keys_and_the_device_only_with_limits():
    props = {"Aux/qos.linbit.com/rbps": "41943040", "Aux/qos.linbit.com/riops": "40Mi",
             "Aux/csi-volume-name": "pvc-1"}
    assert qos.publish_context(props, "/dev/drbd1000") == {
        "qos.linbit.com/rbps": "41943040", "qos.linbit.com/riops": str(40 << 20),
        "qos.linbit.com/device": "/dev/drbd1000"}
    assert qos.publish_context({"Aux/csi-volume-name": "pvc-1"}, "/dev/drbd1000") == {}


def test_publish_context_skips_a_hand_edited_garbage_value():
    props = {"Aux/qos.linbit.com/rbps": "lots", "Aux/qos.linbit.com/wbps": "5"}
    assert qos.publish_context(props, "/dev/x") == {"qos.linbit.com/wbps": "5",
                                                   "qos.linbit.com/device": "/dev/x"}
