{{/*
The port of a listen address (":4244", "0.0.0.0:4244", "[::]:4244"), as the agent reads it: what
follows the last colon. The container's ports and the hubble-peer Service's target use it, so they
follow hubble.listenAddress and hubble.metrics.address.
*/}}
{{- define "imdsguard.port" -}}
{{- . | splitList ":" | last -}}
{{- end -}}
