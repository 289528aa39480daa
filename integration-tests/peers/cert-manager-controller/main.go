// Command cert-manager-controller runs cert-manager's own control loops (github.com/cert-manager/cert-manager,
// the version pinned as CERT_MANAGER_VERSION in ../versions.env) against one API server, for the chart's
// cert-manager test (integration-tests/tests/deploy_certmanager.rs).
//
// Why a main of our own: upstream's controller binary lives in a separate Go module
// (github.com/cert-manager/cert-manager/controller-binary, built with a `replace` to the repository root) that is
// not published to the Go module proxy; the published github.com/cert-manager/cert-manager module holds every
// controller and issuer but no main package. This file is only the start-up glue: it builds cert-manager's
// controller context the way upstream does and runs the registered controllers named by --controllers. No
// metrics/healthz servers, no leader election (one instance per test).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"golang.org/x/sync/errgroup"
	"k8s.io/klog/v2"

	// Each of these registers its control loop (or issuer type) with cert-manager in init().
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

// The controllers a CA or self-signed (Cluster)Issuer needs, as upstream names them.
const defaultControllers = "issuers,clusterissuers,certificaterequests-approver," +
	"certificaterequests-issuer-ca,certificaterequests-issuer-selfsigned,certificates-trigger," +
	"certificates-issuing,certificates-key-manager,certificates-request-manager,certificates-readiness," +
	"certificates-revision-manager"

func main() {
	kubeconfig := flag.String("kubeconfig", "", "Path to a kubeconfig for the API server.")
	clusterResourceNamespace := flag.String("cluster-resource-namespace", "kube-system",
		"Namespace holding the Secrets of ClusterIssuers (a CA ClusterIssuer's key pair).")
	namespace := flag.String("namespace", "", "Watch only this namespace (disables ClusterIssuers); \"\" = all.")
	controllers := flag.String("controllers", defaultControllers, "Comma-separated cert-manager controllers to run.")
	workers := flag.Int("workers", 5, "Concurrent workers per controller (upstream's default).")
	klog.InitFlags(nil) // -v and the other klog flags, as upstream's binary has them
	logf.InitLogs()
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, logf.Log, "controller")
	if err := run(ctx, *kubeconfig, *clusterResourceNamespace, *namespace, strings.Split(*controllers, ","), *workers); err != nil {
		fmt.Fprintln(os.Stderr, "cert-manager-controller:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, kubeconfig, clusterResourceNamespace, namespace string, names []string, workers int) error {
	// Upstream's defaults (internal/apis/config/controller/v1alpha1/defaults.go) for what the CA and
	// self-signed paths read.
	factory, err := controller.NewContextFactory(ctx, controller.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   20,
		KubernetesAPIBurst: 50,
		Namespace:          namespace,
		IssuerOptions: controller.IssuerOptions{
			ClusterResourceNamespace:        clusterResourceNamespace,
			ClusterIssuerAmbientCredentials: true,
		},
		CertificateOptions: controller.CertificateOptions{
			CopiedAnnotationPrefixes:                 []string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"},
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	})
	if err != nil {
		return err
	}
	base, err := factory.Build()
	if err != nil {
		return err
	}
	known := controller.Known()
	g, ctx := errgroup.WithContext(ctx)
	for _, name := range names {
		constructor, ok := known[name]
		if !ok {
			return fmt.Errorf("unknown controller %q", name)
		}
		loop, err := constructor(factory)
		if err != nil {
			return fmt.Errorf("controller %s: %w", name, err)
		}
		g.Go(func() error { return loop.Run(workers, ctx) })
	}
	base.SharedInformerFactory.Start(ctx.Done())
	base.KubeSharedInformerFactory.Start(ctx.Done())
	base.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	return g.Wait()
}
