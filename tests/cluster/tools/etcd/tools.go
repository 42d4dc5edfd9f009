//go:build tools

// Package tools pins the etcd server command built by tests/cluster/build.sh
// (`go build go.etcd.io/etcd/server/v3`). `go install ...@version` is refused
// because etcd's go.mod carries replace directives; a consumer module is not
// bound by them and pins the sibling modules (api, client, pkg) by version.
package tools

import _ "go.etcd.io/etcd/server/v3"
