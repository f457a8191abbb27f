{{/* Names, labels and shared checks of the Fleetpulse chart. */}}

{{- define "fleetpulse.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fleetpulse.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "collector"). */}}
{{- define "fleetpulse.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "fleetpulse.image" -}}
{{- printf "%s%s:%s" .root.Values.image.registry .repository (.root.Values.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{- define "fleetpulse.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-credentials" (include "fleetpulse.fullname" .)) -}}
{{- end -}}

{{- define "fleetpulse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "fleetpulse.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* Fails the render when a component would run several replicas on SQLite. */}}
{{- define "fleetpulse.checkReplicas" -}}
{{- $c := index .root.Values .component -}}
{{- if eq .root.Values.controlDatabase.type "sqlite" -}}
{{- if or (gt (int $c.replicas) 1) (and (hasKey $c "autoscaling") $c.autoscaling.enabled) -}}
{{- fail (printf "%s: more than one replica (or autoscaling) needs controlDatabase.type=postgres: SQLite is one file on one pod's volume, and the batch ledger that keeps resends exactly-once must be shared" .component) -}}
{{- end -}}
{{- else if ne .root.Values.controlDatabase.type "postgres" -}}
{{- fail (printf "controlDatabase.type must be sqlite or postgres, not %q" .root.Values.controlDatabase.type) -}}
{{- end -}}
{{- end -}}
