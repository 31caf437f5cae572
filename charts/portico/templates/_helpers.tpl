{{/*
Naming, labels and the pieces every workload shares.
*/}}
{{- define "portico.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object-name prefix; 50 characters leave room for the longest suffix ("-controller"). */}}
{{- define "portico.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "portico.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portico.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portico.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Call with (dict "root" $ "component" "controller"). */}}
{{- define "portico.labels" -}}
helm.sh/chart: {{ include "portico.chart" .root }}
{{ include "portico.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: portico
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "portico.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* ServiceAccount name of a component: (dict "root" $ "component" "speaker"). */}}
{{- define "portico.serviceAccountName" -}}
{{- $sa := (index .root.Values .component).serviceAccount -}}
{{- if $sa.create -}}
{{ default (printf "%s-%s" (include "portico.fullname" .root) .component) $sa.name }}
{{- else -}}
{{ default "default" $sa.name }}
{{- end -}}
{{- end }}

{{/* Downward-API environment every component reads (see the CLI contract). */}}
{{- define "portico.downwardEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}

{{/* Common arguments: (dict "root" $ "port" 7472). */}}
{{- define "portico.commonArgs" -}}
- --metrics-addr=0.0.0.0:{{ .port }}
- --log-level={{ .root.Values.logLevel }}
{{- end }}

{{/* Pod-level security context for the non-root components. The UID matches the image's
     "portico" user (Dockerfile) so runAsNonRoot can be verified by the kubelet. */}}
{{- define "portico.podSecurityContextNonRoot" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "portico.containerSecurityContextNonRoot" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Probes on the component's metrics port: (dict "probe" .Values.x.livenessProbe "path"
     "/healthz" "port" "metrics"). */}}
{{- define "portico.probe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}

{{/* Default anti-affinity: spread replicas over nodes so one node failure keeps one alive. */}}
{{- define "portico.spreadAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "portico.selectorLabels" . | nindent 12 }}
{{- end }}

{{/* Namespaced rules of the ingress: cluster-wide, or a Role in ingress.watchNamespace. */}}
{{- define "portico.ingressNamespacedRules" }}
  - apiGroups: ["networking.k8s.io"]
    resources: ["ingresses"]
    verbs: ["get", "list", "watch"]
  - apiGroups: ["networking.k8s.io"]
    resources: ["ingresses/status"]
    verbs: ["patch"]
  - apiGroups: ["discovery.k8s.io"]
    resources: ["endpointslices"]
    verbs: ["get", "list", "watch"]
  # One list+watch per referenced TLS Secret, with a metadata.name field selector.
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["get", "list", "watch"]
{{- end }}

{{/* Fields the API server never lets change on an existing object. An upgrade that would
     change one is refused here, while rendering and before anything is applied, naming the
     value, rather than by the API server halfway through the apply (a failed revision with
     some objects already changed). `lookup` is empty under `helm template` and client dry
     runs, so those render as before.
     (dict "value" "loadBalancerClass" "object" "Service ns/name" "field" "spec.x" "live" "a" "want" "b") */}}
{{- define "portico.failImmutable" -}}
{{- fail (printf "%s cannot change on an installed release: %s has %s %q and Kubernetes never changes that field (this upgrade would make it %q). Keep the installed value, or uninstall and install again." .value .object .field .live .want) }}
{{- end }}

{{/* A workload's spec.selector (its app.kubernetes.io/name label follows nameOverride):
     (dict "root" $ "kind" "Deployment" "name" "<object name>"). */}}
{{- define "portico.checkSelector" -}}
{{- $live := lookup "apps/v1" .kind .root.Release.Namespace .name }}
{{- if $live }}
{{- $liveName := dig "spec" "selector" "matchLabels" "app.kubernetes.io/name" "" $live }}
{{- $want := include "portico.name" .root }}
{{- if ne $liveName $want }}
{{- include "portico.failImmutable" (dict "value" "nameOverride" "object" (printf "%s %s/%s" .kind .root.Release.Namespace .name) "field" "spec.selector app.kubernetes.io/name" "live" $liveName "want" $want) }}
{{- end }}
{{- end }}
{{- end }}
