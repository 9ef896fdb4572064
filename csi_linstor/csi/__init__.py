"""The CSI servicers: one module per CSI service (identity, controller, node, group controller).

Each RPC method parses its request, calls one operation (csi_linstor.mapping for the controller
side, csi_linstor.nodeops for the node side) and builds the reply; every method passes the one
wrapper in csi_linstor.rpc.
"""
