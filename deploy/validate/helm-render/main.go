// helm-render renders a Helm chart the way `helm template` does, offline, for CI: no helm binary
// can be installed from the package registries this project may use (see deploy/README.md).
//
// It reproduces Helm 3's rendering engine (helm.sh/helm/v3/pkg/engine): Go text/template with
// Sprig's function map minus env/expandenv, Helm's own functions (include, tpl, required,
// toYaml, fromYaml, toJson, fromJson, and lookup answering empty as in `helm template`),
// missingkey=zero, "<no value>" removed; the built-in objects .Values (values.yaml deep-merged with every -f file, a null deleting a key),
// .Release, .Chart, .Capabilities, .Template; partials are the files starting with "_".
// Its output is a multi-document YAML stream with a "# Source:" comment per template, like
// `helm template`, so the manifests can be validated against Kubernetes' JSON schemas.
//
// Usage: helm-render [-f values.yaml]... [--name RELEASE] [--namespace NS] CHART_DIR
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"sigs.k8s.io/yaml"
)

type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

func main() {
	var files valueFiles
	flag.Var(&files, "f", "values file merged over the chart's values.yaml (repeatable)")
	name := flag.String("name", "release", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	kubeVersion := flag.String("kube-version", "v1.30.0", "Kubernetes version for .Capabilities")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: helm-render [-f values.yaml]... [--name R] [--namespace NS] CHART_DIR")
		os.Exit(2)
	}
	out, err := render(flag.Arg(0), files, *name, *namespace, *kubeVersion)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helm-render:", err)
		os.Exit(1)
	}
	os.Stdout.WriteString(out)
}

func readYAMLMap(file string) (map[string]interface{}, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	m := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return m, nil
}

// coalesce merges src over dst like Helm's value files: maps merge key by key, anything else
// replaces, and a null deletes the key.
func coalesce(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		sm, sok := v.(map[string]interface{})
		dm, dok := dst[k].(map[string]interface{})
		if sok && dok {
			dst[k] = coalesce(dm, sm)
		} else {
			dst[k] = v
		}
	}
	return dst
}

func render(chartDir string, valueFiles []string, release, namespace, kubeVersion string) (string, error) {
	meta, err := readYAMLMap(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return "", err
	}
	chartName, _ := meta["name"].(string)
	if chartName == "" {
		return "", errors.New("Chart.yaml: name is required")
	}
	chart := map[string]interface{}{}
	for k, v := range meta {
		// Helm exposes Chart.yaml's fields capitalised: .Chart.Name, .Chart.AppVersion...
		chart[strings.ToUpper(k[:1])+k[1:]] = v
	}
	values, err := readYAMLMap(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return "", err
	}
	for _, f := range valueFiles {
		extra, err := readYAMLMap(f)
		if err != nil {
			return "", err
		}
		values = coalesce(values, extra)
	}
	major, minor := "1", "30"
	if parts := strings.Split(strings.TrimPrefix(kubeVersion, "v"), "."); len(parts) >= 2 {
		major, minor = parts[0], parts[1]
	}
	top := map[string]interface{}{
		"Values": values,
		"Chart":  chart,
		"Release": map[string]interface{}{
			"Name": release, "Namespace": namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Capabilities": map[string]interface{}{
			"KubeVersion": map[string]interface{}{
				"Version": kubeVersion, "GitVersion": kubeVersion, "Major": major, "Minor": minor,
			},
			"APIVersions": apiVersions{},
		},
	}

	tplDir := filepath.Join(chartDir, "templates")
	var names []string
	err = filepath.Walk(tplDir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(chartDir, p)
		names = append(names, path.Join(chartName, filepath.ToSlash(rel)))
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(names)

	t := template.New("gotpl").Option("missingkey=zero")
	t.Funcs(funcMap(t))
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(chartDir, strings.TrimPrefix(n, chartName+"/")))
		if err != nil {
			return "", err
		}
		if _, err := t.New(n).Parse(string(data)); err != nil {
			return "", err
		}
	}

	var out strings.Builder
	for _, n := range names {
		base := path.Base(n)
		if strings.HasPrefix(base, "_") || base == "NOTES.txt" {
			// Partials only define templates; NOTES.txt is shown to the user, not applied.
			// Both are still executed so that an error in them fails the render.
			if base == "NOTES.txt" {
				if _, err := execute(t, n, top, chartName); err != nil {
					return "", err
				}
			}
			continue
		}
		text, err := execute(t, n, top, chartName)
		if err != nil {
			return "", err
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", n, strings.TrimSpace(text))
	}
	return out.String(), nil
}

func execute(t *template.Template, name string, top map[string]interface{}, chartName string) (string, error) {
	vals := map[string]interface{}{}
	for k, v := range top {
		vals[k] = v
	}
	vals["Template"] = map[string]interface{}{"Name": name, "BasePath": chartName + "/templates"}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, name, vals); err != nil {
		return "", err
	}
	return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
}

// apiVersions answers .Capabilities.APIVersions.Has like `helm template` without a cluster:
// the built-in API groups are available, CRD-provided ones (monitoring.coreos.com) are not
// unless passed with --api-versions, which this renderer does not need.
type apiVersions struct{}

func (apiVersions) Has(v string) bool {
	return !strings.Contains(v, "monitoring.coreos.com")
}

func funcMap(t *template.Template) template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	includedNames := map[string]int{}
	f["include"] = func(name string, data interface{}) (string, error) {
		if includedNames[name] > 1000 {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		includedNames[name]++
		defer func() { includedNames[name]-- }()
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		clone, err := t.Clone()
		if err != nil {
			return "", err
		}
		nt, err := clone.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		if err := nt.Execute(&buf, data); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	f["required"] = func(msg string, val interface{}) (interface{}, error) {
		if val == nil {
			return nil, errors.New(msg)
		}
		if s, ok := val.(string); ok && s == "" {
			return nil, errors.New(msg)
		}
		return val, nil
	}
	f["toYaml"] = func(v interface{}) string {
		data, err := yaml.Marshal(v)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(string(data), "\n")
	}
	f["fromYaml"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := yaml.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["toJson"] = func(v interface{}) string {
		data, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return string(data)
	}
	f["fromJson"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["lookup"] = func(string, string, string, string) (map[string]interface{}, error) {
		// `helm template` has no cluster: lookup answers an empty object.
		return map[string]interface{}{}, nil
	}
	return f
}
