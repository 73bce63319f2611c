# Labels: a 5-class logistic regression (L2 lam) and a cosine prototype classifier on the
# class-token features of the 97 adaptation cells, lam chosen by 5-fold CV on them. See README.md.
import numpy as np
exec(open(__file__.replace('probe.py', 'align.py')).read().split("print('wbc val")[0])
T=['Neutrophil','Eosinophil','Lymphocyte','Monocyte','Basophil']
yt=np.array([T.index(l) for l in lt]); yx=np.array([T.index(l) for l in lx])
def lr_fit(X,y,lam,iters=300):
    mu,sd=X.mean(0),X.std(0)+1e-6; Z=(X-mu)/sd; K=5; Wl=np.zeros((K,Z.shape[1])); bl=np.zeros(K)
    Y=np.eye(K)[y]; 
    for it in range(iters):
        P=Z@Wl.T+bl; P=np.exp(P-P.max(1,keepdims=True)); P/=P.sum(1,keepdims=True)
        G=(P-Y)/len(y); Wl-=0.5*(G.T@Z+lam*Wl); bl-=0.5*G.sum(0)
    return lambda X:((X-mu)/sd@Wl.T+bl).argmax(1)
def proto(X,y):
    mu,sd=X.mean(0),X.std(0)+1e-6; Z=(X-mu)/sd; Z/=np.linalg.norm(Z,axis=1,keepdims=True)
    P=np.stack([Z[y==k].mean(0) if (y==k).any() else np.zeros(Z.shape[1]) for k in range(5)])
    return lambda X: (((X-mu)/sd)/np.linalg.norm((X-mu)/sd,axis=1,keepdims=True)@P.T).argmax(1)
rng=np.random.default_rng(0); folds=rng.permutation(len(yt))%5
def cv(make):
    r=0
    for k in range(5):
        tr,te=folds!=k,folds==k; f=make(ft[tr],yt[tr]); r+=(f(ft[te])==yt[te]).sum()
    return r/len(yt)
for lam in [1e-3,1e-2,1e-1,1.0]:
    mk=lambda X,y,lam=lam: lr_fit(X,y,lam)
    print('LR lam',lam,'cv %.3f'%cv(mk),'test %.3f'%(mk(ft,yt)(fx)==yx).mean())
print('proto cv %.3f test %.3f'%(cv(proto),(proto(ft,yt)(fx)==yx).mean()))
from collections import Counter; print(Counter(lt), Counter(lx))
